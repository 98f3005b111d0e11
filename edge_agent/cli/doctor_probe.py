"""Doctor's probes in a child process it does not wait for beyond a few seconds.

A filesystem that is frozen (``fsfreeze -f``, a snapshot in progress) or failing (a dying SD
card, a hung USB stick) puts whatever writes to it — and on a failing one whatever reads from it
— into uninterruptible sleep: no timeout, no signal gets it out. Doctor runs exactly when
something is wrong, so every probe it makes on the outbox's and the state's paths runs in a forked
child; the parent waits at most ``timeout_s`` for its JSON answer and otherwise reports that
nothing came, kills the child (a child in uninterruptible sleep dies when the disk lets go) and
goes on: the report is printed and doctor exits whatever the disk does.

``ident`` (root only) makes the child drop to the service's identity first (setgroups, setgid,
setuid) so its checks see exactly the accesses the daemon will have.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import select
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent.errors import EdgeAgentError

if TYPE_CHECKING:
    from edge_agent.cli.doctor_identity import Identity

PROBE_TIMEOUT_S = 5.0  # one probe of a path (write + fsync, statvfs, reading the key)


class NoAnswer(EdgeAgentError):
    """The child did not answer in time (``seconds``) or died without a word (``why``); doctor
    turns it into a check's line, never lets it out."""

    def __init__(self, why: str, seconds: float | None = None) -> None:
        super().__init__(why)
        self.seconds = seconds


def frozen_hint(seconds: float) -> str:
    return f"did not answer in {seconds:.0f} s — the disk may be frozen or failing"


def write_probe(directory: Path) -> None:
    """Write and fsync a block in ``directory``, leaving nothing behind: an unnamed file
    (O_TMPFILE) where the filesystem has them, else a named one removed at once. A probe killed
    while the disk is frozen leaves no stray name when it thaws. OSError as the disk says it."""
    try:
        fd = os.open(directory, os.O_TMPFILE | os.O_WRONLY, 0o600)
        name: Path | None = None
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            raise
        name = directory / f".doctor-{os.getpid()}"
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, bytes(4096))
        os.fsync(fd)
    finally:
        os.close(fd)
        if name is not None:
            os.unlink(name)


def in_child(fn: Callable[[], Any], *, timeout_s: float = PROBE_TIMEOUT_S,
             ident: Identity | None = None) -> Any:
    """``fn()``'s JSON-able result, computed in a forked child (as ``ident`` when given).
    NoAnswer when the child says nothing within ``timeout_s`` or fails; the child is then
    killed and not waited for."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 0
        try:
            os.close(r)
            # nothing inherited stays open but our pipe: a probe stuck on the disk must not hold
            # a pipe someone else waits on for EOF (an outer child's to doctor, run_as)
            os.closerange(3, w)
            os.closerange(w + 1, _max_fd())
            # it may outlive doctor (stuck until the disk lets go): it must not hold doctor's
            # stdout / stderr open, or whoever reads them (a pipe, a script) waits for it too
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            os.close(null)
            if ident is not None:
                os.setgroups(list(ident.groups))
                os.setgid(ident.gid)
                os.setuid(ident.uid)
            data = json.dumps({"ok": fn()}).encode()
        except BaseException as exc:  # report whatever went wrong to the parent
            data = json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode()
            code = 1
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(w, view):]
        finally:
            os._exit(code)
    os.close(w)
    try:
        raw = _read_until(r, time.monotonic() + timeout_s)
    finally:
        os.close(r)
    if raw is None:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
        _reap_soon(pid)
        raise NoAnswer(frozen_hint(timeout_s), timeout_s)
    _reap_soon(pid)
    try:
        out = json.loads(raw)
    except ValueError:
        raise NoAnswer("the child process said nothing") from None
    if "error" in out:
        raise NoAnswer(str(out["error"]))
    return out["ok"]


def _max_fd() -> int:
    try:
        return int(os.sysconf("SC_OPEN_MAX"))
    except (ValueError, OSError):
        return 1024


def _read_until(fd: int, deadline: float) -> bytes | None:
    """Everything until EOF, or None if the deadline came first."""
    chunks: list[bytes] = []
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLHUP)
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not poller.poll(left * 1000):
            return None
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _reap_soon(pid: int) -> None:
    """Collect the child if it is gone (briefly waiting for a killed one); one stuck in
    uninterruptible sleep is left behind: it goes when the disk lets go or doctor exits."""
    deadline = time.monotonic() + 0.2
    while True:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return
        if done or time.monotonic() > deadline:
            return
        time.sleep(0.01)
