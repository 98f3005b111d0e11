"""The demo cleans up after itself: SIGTERM, a closed terminal (SIGHUP) or even SIGKILL leave no
broker or agent behind (one process group, the kernel's parent-death signal as a backstop); a
failed run keeps its logs and says where; on a terminal the view fits 80x24 on the alternate
screen without flooding the scrollback; without one, events are printed as they happen."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

DEMO = [sys.executable, "-m", "edge_agent.cli.main", "demo", "--broker", "mosquitto"]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def children_of(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True,
                         check=False).stdout
    return [int(x) for x in out.split()]


def gone(pids: list[int], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = []
        for p in pids:
            try:
                os.kill(p, 0)
                alive.append(p)
            except ProcessLookupError:
                pass
        if not alive:
            return True
        time.sleep(0.2)
    return False


def started(proc: subprocess.Popen[str]) -> tuple[str, list[int]]:
    """The demo's first two event lines (printed as they happen: the agent's pid, then where
    its logs are, on a line of its own) and its child processes."""
    assert proc.stdout is not None
    first = proc.stdout.readline()
    assert "agent pid" in first, first
    logs = proc.stdout.readline()
    assert re.search(r"^\s*[\d.]+s  logs in \S+ \(kept if the run fails\)$", logs), logs
    first += logs
    deadline = time.monotonic() + 20
    kids: list[int] = []
    while time.monotonic() < deadline and len(kids) < 2:
        kids = children_of(proc.pid)
        time.sleep(0.2)
    assert len(kids) == 2, kids  # mosquitto and the agent
    assert len({os.getpgid(k) for k in kids}) == 1 and os.getpgid(kids[0]) != os.getpgid(0)
    return first, kids


@pytest.mark.timeout(120)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGKILL],
                         ids=lambda s: signal.Signals(s).name)
def test_a_signal_leaves_nothing_behind(sig: int) -> None:
    with subprocess.Popen([*DEMO, "--duration", "90"], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL) as proc:
        _signal_run(proc, sig)


def _signal_run(proc: subprocess.Popen[str], sig: int) -> None:
    try:
        first, kids = started(proc)
        time.sleep(2)
        proc.send_signal(sig)
        assert proc.stdout is not None
        out = proc.stdout.read()
        assert proc.wait(60) == (128 + sig if sig != signal.SIGKILL else -sig), out
        assert gone(kids), [Path(f"/proc/{k}/cmdline").read_text() for k in kids if
                            Path(f"/proc/{k}").exists()]
        if sig != signal.SIGKILL:
            name = signal.Signals(sig).name
            assert f"stopped by {name}" in out and "verified:" in out, out
            assert "Traceback" not in out
            workdir = re.search(r"logs in (\S+) \(kept if the run fails\)", first)
            assert workdir is not None and not Path(workdir.group(1)).exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.timeout(120)
def test_a_failed_run_keeps_its_logs() -> None:
    with subprocess.Popen([*DEMO, "--duration", "60"], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL) as proc:
        _failed_run(proc)


def _failed_run(proc: subprocess.Popen[str]) -> None:
    try:
        first, kids = started(proc)
        agent = int(re.search(r"agent pid (\d+)", first).group(1))  # type: ignore[union-attr]
        time.sleep(3)  # it has logged its start
        os.kill(agent, signal.SIGKILL)
        assert proc.stdout is not None
        out = proc.stdout.read()
        assert proc.wait(60) == 1, out
        assert "agent exited with -9" in out
        # one honest verdict: a run whose agent died is not "ALL VERIFIED"
        verdict = next(ln for ln in out.splitlines() if ln.startswith("verified:"))
        assert "FAILED: the agent was killed by SIGKILL" in verdict, out
        assert "ALL VERIFIED" not in out and "_AgentExited" not in out, out
        kept = re.search(r"logs kept in (\S+) \(agent\.log, broker\.log\)", out)
        assert kept is not None, out
        logs = Path(kept.group(1))
        assert "edge_agent" in (logs / "agent.log").read_text(), list(logs.iterdir())
        assert gone(kids)
        shutil.rmtree(logs)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def read_for(fd: int, seconds: float) -> bytes:
    out = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 0.2)
        if r:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    return out


@pytest.mark.timeout(120)
def test_on_a_terminal_80x24(tmp_path: Path) -> None:
    pid, fd = pty.fork()
    if pid == 0:  # the child: the demo on the pty, 80x24
        os.execvp(DEMO[0], DEMO)
    try:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        screen = read_for(fd, 12).decode(errors="replace")
        assert "\x1b[?1049h" in screen  # the alternate screen
        assert "\x1b[2J" not in screen  # no full clears flooding the scrollback
        frames = [f for f in screen.split("\x1b[H") if "edge-agent demo" in f]
        assert len(frames) >= 3, screen[-2000:]
        for frame in frames[1:]:
            lines = ANSI.sub("", frame).replace("\r", "").split("\n")
            assert len(lines) <= 23 and max(len(ln) for ln in lines) <= 80, lines
            assert lines[0].startswith("edge-agent demo") and lines[1].startswith("keys:")
        os.write(fd, b"q")
        rest = read_for(fd, 60).decode(errors="replace")
        assert "\x1b[?1049l" in rest and "verified:" in rest, rest[-2000:]
        assert "Traceback" not in screen + rest
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, rest[-2000:]
        pid = 0
    finally:
        if pid:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)


@pytest.mark.timeout(120)
def test_a_closed_terminal_stops_everything() -> None:
    pid, fd = pty.fork()
    if pid == 0:
        os.execvp(DEMO[0], DEMO)
    try:
        read_for(fd, 8)
        kids = children_of(pid)
        assert len(kids) == 2, kids
        os.close(fd)  # the terminal window is closed: SIGHUP
        fd = -1
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.2)
        assert done, "the demo outlived its terminal"
        assert os.waitstatus_to_exitcode(status) == 128 + signal.SIGHUP
        pid = 0
        assert gone(kids)
    finally:
        if pid:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        if fd >= 0:
            os.close(fd)
