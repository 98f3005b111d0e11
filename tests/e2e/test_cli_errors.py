"""The technician at the cabinet, against a running gateway: mistyped names are refused at once with
a suggestion (never a silent wait), values read with units at the profile's resolution, a dead
device shows in `devices` and a write to it says it failed, `status` clears an uplink error once
reconnected, a closed pipe and Ctrl-C end quietly, and --direct works for every kind of device
once the daemon is stopped. No traceback anywhere."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.technician import free_uid, need_root, run_cli_as

from .conftest import Gateway
from .test_daemon import wait

CLI = [sys.executable, "-m", "edge_agent.cli.main"]


def one_line(res: subprocess.CompletedProcess[str], code: int) -> str:
    assert "Traceback" not in res.stdout + res.stderr, res.stderr
    assert res.returncode == code, (res.returncode, res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    return lines[0]


def waits_on_socket(pid: int) -> bool:
    """The process has a socket open and sleeps waiting for it (the kernel's wait channel: a
    read of a Unix stream socket, or the poll a socket with a timeout waits in)."""
    try:
        fds = Path(f"/proc/{pid}/fd")
        if not any(os.readlink(fds / fd).startswith("socket:") for fd in os.listdir(fds)):
            return False
        wchan = Path(f"/proc/{pid}/wchan").read_text()
        if wchan not in ("", "0"):
            return "unix_stream_read" in wchan or "poll" in wchan
        # no wait channel shown by this kernel: in recvfrom or poll (x86_64, aarch64)?
        return Path(f"/proc/{pid}/syscall").read_text().split()[0] in ("45", "7", "271", "207",
                                                                          "73")
    except (OSError, IndexError):
        return False


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
    # filters that select nothing together are refused, never waited on
    msg = one_line(gw.cli("tail", "--device", "lamp-01", "--class", "water_meter", timeout=20), 2)
    assert "lamp-01 is a street_light, not a water_meter" in msg, msg
    # a point reported only on change: tail says so at once, then waits
    follow = subprocess.Popen([*CLI, "tail", "--device", "meter-01", "--point", "serial_number"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={"EDGE_AGENT_SOCKET": str(gw.socket_path), "PATH": "/usr/bin"})
    assert follow.stderr is not None
    note = follow.stderr.readline()
    follow.send_signal(signal.SIGINT)
    follow.communicate(timeout=30)
    assert note.startswith("note: meter-01.serial_number is polled every 24.0 h and reported "
                           "only when it changes, no heartbeat"), note
    assert "edge-agent read meter-01 serial_number" in note

    # values as a person reads them: units, the resolution of the profile, quality
    lamp = gw.cli("read", "lamp-01").stdout
    assert re.search(r"^point\s+value\s+quality\s+age$", lamp, re.M), lamp
    assert re.search(r"voltage\s+\d+\.\d V\s+ok\s+(just now|\d\.\d s ago)$", lamp, re.M), lamp
    assert re.search(r"current\s+\d+\.\d{3} A", lamp), lamp
    assert not re.search(r"\d\.\d{6,}", lamp), lamp  # no 20.200000000000003
    radio = gw.cli("read", "nbiot-1").stdout
    assert re.search(r"rsrp\s+-\d+\.\d dBm", radio), radio
    # --json: rounded as shown (0.472, not 0.47200000000000003); --exact: as decoded
    vals = json.loads(gw.cli("read", "lamp-01", "--json").stdout)
    assert vals["current"] == round(vals["current"], 3) and vals["voltage"] == round(
        vals["voltage"], 1), vals
    exact = json.loads(gw.cli("read", "lamp-01", "current", "--json", "--exact").stdout)
    assert exact["current"] == pytest.approx(vals["current"], abs=0.05)
    flow = json.loads(gw.cli("read", "meter-01", "flow_rate", "--json").stdout)["flow_rate"]
    assert len(repr(abs(flow)).replace(".", "").lstrip("0")) <= 7, flow  # float32: 7 digits
    meter = gw.cli("read", "meter-01").stdout
    assert re.search(r"flow_rate\s+-?\d+(\.\d{1,7})? m³/h", meter), meter
    assert re.search(r"totalizer\s+\d+\.\d{3} m³", meter), meter

    # refusals say what to do; a read-only point is refused before anything is sent
    msg = one_line(gw.cli("write", "lamp-01", "dimming", "300", "--yes"), 1)
    assert "above the maximum" in msg
    msg = one_line(gw.cli("write", "meter-01", "flow_rate", "1", "--yes"), 2)
    assert "read-only" in msg and "valve" in msg
    msg = one_line(gw.cli("write", "lamp-01", "dimming", "abc", "--yes"), 2)
    assert "'abc' is not a number: lamp-01.dimming takes a number 0..100 %" in msg, msg
    assert "access" not in msg

    # a dead meter: the devices table says so, a write to it FAILED (not "refused")
    gw.sim.fault("meter-02", "dead")
    assert wait(lambda: rows(gw)["meter-02"]["consecutive_failures"] > 0, 60)
    table = gw.cli("devices").stdout
    line = next(ln for ln in table.splitlines() if ln.startswith("meter-02"))
    assert ("DOWN" in line or "QUARANTINED" in line) and "timeout" in line, table
    w = gw.cli("write", "meter-02", "valve", "off", "--yes", timeout=60)
    msg = one_line(w, 4)
    assert "no answer in time" in msg and "refused" not in msg, msg
    # Ctrl-C while waiting for the daemon's answer: 130 and one line. The daemon is stopped
    # (SIGSTOP) so that the command cannot finish on its own, and interrupted only once it is
    # known to wait on the socket (not while still importing)
    gw.proc.send_signal(signal.SIGSTOP)
    try:
        proc = subprocess.Popen([*CLI, "read", "meter-02"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True,
                                env={"EDGE_AGENT_SOCKET": str(gw.socket_path),
                                     "PATH": "/usr/bin"})
        assert wait(lambda: waits_on_socket(proc.pid), 20)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        gw.proc.send_signal(signal.SIGCONT)
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


@pytest.mark.timeout(120)
def test_direct_is_refused_while_the_daemon_runs(open_gateway: Gateway) -> None:
    """A technician outside the socket's group cannot read through the daemon; --direct would
    make a second master on its buses (or fail with a confusing "port busy" on RS-485): it is
    refused with the group to join, and nothing is sent on any bus."""
    gw = open_gateway
    need_root()
    for argv in (["read", "lamp-01", "--direct"], ["read", "meter-01", "--direct"]):
        res = run_cli_as(free_uid(), [*argv, "--socket", str(gw.socket_path), "--config",
                                      str(gw.config)])
        msg = one_line(res, 3)
        assert "--direct refused" in msg and "second master" in msg, msg
        assert f"socket {gw.socket_path} is there but this user may not use it" in msg, msg
        assert "sudo" in msg and "BusClosed" not in msg, msg  # the group (root's here) or sudo
