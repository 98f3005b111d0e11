"""The demo's child processes (the agent, mosquitto): one process group, never outliving the demo.

* Every child is started in ONE process group of its own (the first child leads it; later ones
  join it), so the terminal's Ctrl-C / hang-up reach only the demo, which stops them in order
  (agent first: it flushes and says "offline"), and ``stop()`` ends whatever is left of the group.
* Every child is started through this module as a launcher (``python -m simulators.demo.children
  CMD...``) that asks the kernel for SIGTERM when the demo dies (``PR_SET_PDEATHSIG``) before it
  execs CMD: a demo killed with SIGKILL leaves nothing running either. (A launcher rather than
  ``preexec_fn``, which is unsafe with the simulator's threads running.)
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """SIGTERM this process when ``parent`` goes away (Linux); survives exec."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        return  # not Linux: the demo's own clean-up still stops the group
    if os.getppid() != parent:  # the demo died before the request took effect
        os._exit(1)


class ChildGroup:
    def __init__(self) -> None:
        self.pgid = 0
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, argv: Sequence[str], **kw: Any) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "simulators.demo.children", str(os.getpid()), *argv]
        try:
            proc: subprocess.Popen[bytes] = subprocess.Popen(cmd, process_group=self.pgid, **kw)
        except PermissionError:  # the group is gone (every member exited): a new one
            self.pgid = 0
            proc = subprocess.Popen(cmd, process_group=0, **kw)
        if self.pgid == 0:
            self.pgid = proc.pid
        self.procs.append(proc)
        return proc

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM to the group, SIGKILL to whatever is left after ``timeout_s``."""
        if self.pgid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pgid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if self.pgid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pgid, signal.SIGKILL)
        self.procs.clear()


def main(argv: list[str]) -> None:
    parent, cmd = int(argv[0]), argv[1:]
    die_with_parent(parent)
    os.execvp(cmd[0], cmd)


if __name__ == "__main__":
    main(sys.argv[1:])
