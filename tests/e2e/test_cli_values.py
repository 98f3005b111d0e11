"""The technician reading values at the cabinet, against a running gateway (issue #13 review,
defects 3, 4 and 6): `tail` never waits in silence (a device or class whose points are reported
rarely, a device that is down: one note at once), `write` takes the words `read` shows and checks
bounds before asking, and `read --json` and `tail --json` carry the same fields, rounding and
quality words."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import time

import pytest

from .conftest import Gateway
from .test_daemon import wait

CLI = [sys.executable, "-m", "edge_agent.cli.main"]


def stderr_lines(gw: Gateway, *argv: str, n: int = 1, within: float = 10.0) -> list[str]:
    """The first ``n`` lines `edge-agent ARGV` writes on stderr, waiting at most ``within``
    seconds for each; the command is then stopped (Ctrl-C)."""
    proc = subprocess.Popen([*CLI, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=dict(os.environ, EDGE_AGENT_SOCKET=str(gw.socket_path)))
    assert proc.stderr is not None
    fd = proc.stderr.fileno()
    got = b""
    try:
        while got.count(b"\n") < n and select.select([fd], [], [], within)[0]:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            got += chunk
        return got.decode().splitlines()[:n]
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert b"Traceback" not in got + err, got + err


@pytest.mark.timeout(180)
def test_tail_says_at_once_why_it_may_stay_silent(gateway: Gateway) -> None:
    gw = gateway
    t0 = time.monotonic()
    [note] = stderr_lines(gw, "tail", "--device", "lamp-01")
    assert time.monotonic() - t0 < 10
    assert note.startswith("note: the ") and " points of lamp-01 are reported only when they " \
        "change or move beyond their deadband, at least every 5 min (heartbeat)" in note, note
    assert "`edge-agent read lamp-01` reads them now" in note, note
    [note] = stderr_lines(gw, "tail", "--class", "street_light")
    assert note.startswith("note: the points of the 2 street_light devices are reported only"), \
        note
    assert "`edge-agent read DEVICE` reads them now" in note, note
    # a device that is down: said at once, with its last error
    gw.sim.fault("meter-02", "dead")
    assert wait(lambda: any(d["name"] == "meter-02" and d.get("consecutive_failures")
                            for d in json.loads(gw.cli("devices", "--json").stdout)), 60)
    lines = stderr_lines(gw, "tail", "--device", "meter-02", n=2)
    assert any(re.match(r"note: meter-02 is (DOWN|QUARANTINED) \(last error: timeout\): its "
                        r"readings come without a value \(quality bad\) until it answers "
                        "again", ln) for ln in lines), lines
