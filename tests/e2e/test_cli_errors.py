"""The technician at the cabinet, against a running gateway: mistyped names are refused at once with
a suggestion (never a silent wait), values read with units at the profile's resolution, a dead
device shows in `devices` and a write to it says it failed, `status` clears an uplink error once
reconnected, a closed pipe and Ctrl-C end quietly, and --direct works for every kind of device
once the daemon is stopped. No traceback anywhere."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from .conftest import Gateway
from .test_daemon import wait

CLI = [sys.executable, "-m", "edge_agent.cli.main"]


def one_line(res: subprocess.CompletedProcess[str], code: int) -> str:
    assert "Traceback" not in res.stdout + res.stderr, res.stderr
    assert res.returncode == code, (res.returncode, res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    return lines[0]


def rows(gw: Gateway) -> dict[str, dict[str, Any]]:
    return {d["name"]: d for d in json.loads(gw.cli("devices", "--json").stdout)}


@pytest.mark.timeout(180)
def test_names_values_and_failures(gateway: Gateway) -> None:
    gw = gateway
    assert wait(lambda: gw.cli("read", "lamp-01", "power").returncode == 0, 30)

    # names: checked, suggested, never waited on
    msg = one_line(gw.cli("read", "lamp-1"), 2)
    assert "no device 'lamp-1'" in msg and "did you mean 'lamp-01'" in msg
    msg = one_line(gw.cli("read", "lamp-01", "powr"), 2)
    assert "did you mean 'power'" in msg
    msg = one_line(gw.cli("write", "lamp-01", "dimmng", "40", "--yes"), 2)
    assert "did you mean 'dimming'" in msg
    for argv, word in ((["--device", "nosuch"], "no device 'nosuch'"),
                       (["--class", "nonsense"], "no class 'nonsense'"),
                       (["--point", "flow_rte"], "did you mean 'flow_rate'"),
                       (["--device", "meter-01", "--point", "power"], "no point 'power'")):
        t0 = time.monotonic()
        msg = one_line(gw.cli("tail", *argv, timeout=20), 2)
        assert word in msg and time.monotonic() - t0 < 10, msg
    js = gw.cli("read", "lamp-1", "--json")
    assert js.returncode == 2 and json.loads(js.stdout)["error"] == "unknown_device"

    # values as a person reads them: units, the resolution of the profile, quality
    lamp = gw.cli("read", "lamp-01").stdout
    assert re.search(r"voltage\s+\d+\.\d V\s+ok", lamp), lamp
    assert re.search(r"current\s+\d+\.\d{3} A", lamp), lamp
    assert not re.search(r"\d\.\d{6,}", lamp), lamp  # no 20.200000000000003
    radio = gw.cli("read", "nbiot-1").stdout
    assert re.search(r"rsrp\s+-\d+\.\d dBm", radio), radio
    meter = gw.cli("read", "meter-01").stdout
    assert re.search(r"flow_rate\s+-?\d+(\.\d{1,7})? m³/h", meter), meter
    assert re.search(r"totalizer\s+\d+\.\d{3} m³", meter), meter

    # refusals say what to do; a read-only point is refused before anything is sent
    msg = one_line(gw.cli("write", "lamp-01", "dimming", "300", "--yes"), 1)
    assert "above the maximum" in msg
    msg = one_line(gw.cli("write", "meter-01", "flow_rate", "1", "--yes"), 2)
    assert "read-only" in msg and "valve" in msg

    # a dead meter: the devices table says so, a write to it FAILED (not "refused")
    gw.sim.fault("meter-02", "dead")
    assert wait(lambda: rows(gw)["meter-02"]["consecutive_failures"] > 0, 60)
    table = gw.cli("devices").stdout
    line = next(ln for ln in table.splitlines() if ln.startswith("meter-02"))
    assert ("DOWN" in line or "QUARANTINED" in line) and "timeout" in line, table
    t0 = time.monotonic()
    w = gw.cli("write", "meter-02", "valve", "off", "--yes", timeout=60)
    waited = time.monotonic() - t0
    msg = one_line(w, 4)
    assert "no answer in time" in msg and "refused" not in msg, msg
    # Ctrl-C while waiting for it: 130 and one line
    proc = subprocess.Popen([*CLI, "read", "meter-02"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={"EDGE_AGENT_SOCKET": str(gw.socket_path), "PATH": "/usr/bin"})
    time.sleep(max(1.0, waited - 1.0))  # started, and still waiting for the meter
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and err.strip() == "edge-agent read: interrupted", err
    gw.sim.fault("meter-02", "none")
    assert wait(lambda: rows(gw)["meter-02"]["consecutive_failures"] == 0, 90)
    line = next(ln for ln in gw.cli("devices").stdout.splitlines() if ln.startswith("meter-02"))
    assert "(was: timeout)" in line and " ok " in line, line


@pytest.mark.timeout(180)
def test_status_forgets_an_uplink_error_once_reconnected(gateway: Gateway) -> None:
    gw = gateway

    def uplink() -> dict[str, Any]:
        res = gw.cli("status", "--json")
        return json.loads(res.stdout)["uplink"] if res.returncode == 0 else {}

    assert wait(lambda: uplink().get("connected"), 30)
    gw.broker.stop()
    try:
        assert wait(lambda: uplink().get("last_error", "-") != "-", 60)
        assert "last_error" in gw.cli("status").stdout
    finally:
        gw.broker.start()
    assert wait(lambda: uplink().get("connected"), 120)
    assert uplink()["last_error"] == "-"
    human = gw.cli("status").stdout
    assert re.search(r"last_error\s+-$", human, re.M), human
    assert re.search(r"footprint\s+\d+(\.\d)? (B|KiB|MiB|GiB)", human), human


@pytest.mark.timeout(120)
def test_a_closed_pipe_and_ctrl_c_end_quietly(gateway: Gateway) -> None:
    gw = gateway
    env = {"EDGE_AGENT_SOCKET": str(gw.socket_path), "PATH": "/usr/bin:/bin"}
    # `edge-agent tail | head -2`
    proc = subprocess.Popen([*CLI, "tail"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env)
    assert proc.stdout is not None and proc.stderr is not None
    got = [proc.stdout.readline() for _ in range(2)]
    assert all(got), got
    proc.stdout.close()
    assert proc.wait(60) == 141
    assert proc.stderr.read() == b""
    proc.stderr.close()
    # Ctrl-C: the way to stop following; quiet, exit 0
    follow = subprocess.Popen([*CLI, "tail"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=env, text=True)
    assert follow.stdout is not None
    assert follow.stdout.readline()
    follow.send_signal(signal.SIGINT)
    _, err = follow.communicate(timeout=30)
    assert follow.returncode == 0 and "Traceback" not in err, err


@pytest.mark.timeout(120)
def test_direct_reads_once_the_daemon_is_stopped(gateway: Gateway) -> None:
    gw = gateway
    gw.proc.send_signal(signal.SIGTERM)
    assert gw.proc.wait(20) == 0
    cfg = str(gw.config)
    r = gw.cli("read", "nbiot-1", "csq", "--direct", "--config", cfg)
    assert r.returncode == 0, r.stderr
    assert re.search(r"csq\s+\d+", r.stdout), r.stdout
    msg = one_line(gw.cli("read", "nope", "--direct", "--config", cfg), 2)
    assert "no device 'nope'" in msg
    msg = one_line(gw.cli("read", "meter-01", "flow", "--direct", "--config", cfg), 2)
    assert "did you mean 'flow_rate'" in msg
    gw.sim.fault("meter-02", "dead")
    msg = one_line(gw.cli("read", "meter-02", "--direct", "--config", cfg, timeout=60), 4)
    assert "no answer" in msg and "meter-02" in msg
