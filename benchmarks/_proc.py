"""Process helpers for the end-to-end benchmarks: a private mosquitto, child processes pinned to
cores, and the kernel's own accounting of a child (CPU from /proc/PID/stat, memory from
/proc/PID/status).

CPU is ``utime + stime`` of the process (all its threads, children excluded). The final reading is
taken from the zombie, after the process exited but before it is reaped, so it includes shutdown.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edge_agent.errors import UplinkError
from simulators.loopback import free_port, mosquitto_path, wait_port

MOSQUITTO = mosquitto_path() or "/usr/sbin/mosquitto"
CLK_TCK = os.sysconf("SC_CLK_TCK")






def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (every thread; waited-for children excluded)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of proc(5)


@dataclass(frozen=True, slots=True)
class Memory:
    rss_mib: float  # VmRSS now
    hwm_mib: float  # VmHWM: peak resident set since start


def memory(pid: int) -> Memory:
    vals: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            vals[key] = int(rest.split()[0]) / 1024
    return Memory(vals.get("VmRSS", float("nan")), vals.get("VmHWM", float("nan")))


def thread_cpu_seconds(pid: int) -> dict[int, float]:
    """utime + stime per thread id (threads that ended are not counted)."""
    out: dict[int, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        out[int(task.name)] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


def wakeups(pid: int) -> dict[int, int]:
    """Voluntary context switches (a thread going to sleep: each one is a later wake-up) so far,
    per thread id, from /proc/PID/task/*/status (threads that ended are not counted)."""
    out: dict[int, int] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            text = (task / "status").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                out[int(task.name)] = int(line.split()[1])
    return out


def pin(pid: int, cores: set[int] | None) -> str:
    """Restrict ``pid`` (and the threads it starts later) to ``cores``; describe the result."""
    if not cores:
        return "any"
    os.sched_setaffinity(pid, cores)
    return ",".join(map(str, sorted(cores)))


class Child:
    """One child process with its output in ``log``; ``stop()`` ends it and returns its final CPU
    seconds (read from the zombie before reaping)."""

    def __init__(self, argv: Sequence[str], log: Path, *, cores: set[int] | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.argv = list(argv)
        self.log = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env)
        self.pid = self.proc.pid
        self.cores = pin(self.pid, cores)
        self.final_cpu_s: float | None = None

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, chars: int = 2000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> float | None:
        if self.proc.returncode is None:
            if self.proc.poll() is None:
                self.proc.send_signal(sig)
            deadline = time.monotonic() + timeout_s
            info = None
            while info is None and time.monotonic() < deadline:
                info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
                if info is None:
                    time.sleep(0.02)
            if info is None:
                self.proc.kill()
            else:
                try:
                    self.final_cpu_s = cpu_seconds(self.pid)  # the zombie keeps its times
                except OSError:
                    self.final_cpu_s = None
            self.proc.wait(10)
        return self.final_cpu_s


class Mosquitto:
    """A private broker on a free loopback port (no persistence, no queue limits)."""

    def __init__(self, directory: Path, *, cores: set[int] | None = None) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        conf = directory / "mosquitto.conf"
        conf.write_text("\n".join([
            f"listener {self.port} 127.0.0.1", "allow_anonymous true", "persistence false",
            "max_inflight_messages 0", "max_queued_messages 0",
            *(["user root"] if os.geteuid() == 0 else []),
            "log_dest stderr", "log_type error", "log_type warning", ""]))
        self.child = Child([MOSQUITTO, "-c", str(conf)], directory / "mosquitto.log", cores=cores)
        try:
            wait_port(self.port)
        except UplinkError:
            self.child.stop(signal.SIGKILL)
            raise RuntimeError(f"mosquitto did not start: {self.child.tail()}") from None

    def stop(self) -> None:
        self.child.stop(signal.SIGTERM, 10.0)
