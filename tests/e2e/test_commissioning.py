"""`edge-agent modbus read|write`: raw registers through the daemon's bus owner while it runs (the
shared RS-485 line keeps its timing, the polled meters record no failure, a write is audited),
straight on the port once it is stopped (by bus name from the config, or by port path). A scan
through the daemon stops at once on Ctrl-C and keeps its finds, also when the daemon stops under
it, and leaves one summary line in the journal."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from .conftest import Gateway
from .test_daemon import wait

CLI = [sys.executable, "-m", "edge_agent.cli.main"]


def failures(gw: Gateway) -> dict[str, int]:
    return {d["name"]: d["failures"] for d in json.loads(gw.cli("devices", "--json").stdout)}


@pytest.mark.timeout(180)
def test_modbus_through_the_daemon_then_direct(gateway: Gateway) -> None:
    gw = gateway
    line = gw.sim.lines["rs485-water"]
    assert wait(lambda: gw.cli("read", "meter-01", "totalizer").returncode == 0, 30)
    before = failures(gw)

    # the totalizer as the profile decodes it and as raw registers (uint32 CDAB x 0.001)
    want = json.loads(gw.cli("read", "meter-01", "totalizer", "--json").stdout)["totalizer"]
    for _ in range(10):  # a burst of commissioning reads between the polls
        r = gw.cli("modbus", "read", "rs485-water", "1", "input", "0", "--type", "uint32",
                   "--order", "CDAB", "--scale", "0.001", "--json")
        assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["via"] == "daemon" and len(got["registers"]) == 2
    assert got["values"][0] == pytest.approx(want, abs=0.05)
    human = gw.cli("modbus", "read", "rs485-water", "1", "input", "0", "8").stdout
    assert "through the daemon" in human and re.search(r"^\s+4\s+0x00[0-9A-F]{2}\s+\d+$",
                                                       human, re.M), human
    # by the port path too: the daemon owns that port, so it goes through the daemon
    r = gw.cli("modbus", "read", line.path, "2", "ir", "4", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["via"] == "daemon", r.stderr

    # a write of the valve coil: confirmed by a read, audited in the daemon's log
    w = gw.cli("modbus", "write", "rs485-water", "1", "coil", "0", "off", "--yes")
    assert w.returncode == 0, w.stderr
    assert json.loads(gw.cli("read", "meter-01", "valve", "--json").stdout)["valve"] is False
    assert wait(lambda: "modbus_write_audit bus=rs485-water unit=1 table=coil address=0 "
                        "values=[0]" in gw.log_text(), 5)
    assert gw.cli("modbus", "write", "rs485-water", "1", "coil", "0", "on", "--yes").returncode \
        == 0

    # a scan of the line goes through the daemon too, between its polls; the journal gets one
    # summary line for it, not a refusal per absent unit
    sc = gw.cli("scan", line.path, "--units", "1-4", "--json", timeout=120)
    assert sc.returncode == 0, sc.stderr
    units = {f["unit"]: f for f in json.loads(sc.stdout)}
    assert set(units) == {1, 2} and units[1]["configured_as"] == "meter-01"
    assert units[2]["profiles"][0] == "water_meter"
    assert wait(lambda: "modbus_scan bus=rs485-water probed=4 answered=2 absent=2"
                in gw.log_text(), 5), gw.log_text()[-2000:]
    assert "control_op_refused op=modbus error=BusTimeout" not in gw.log_text()
    sw = gw.cli("scan", "rs485-water", "--sweep")
    assert sw.returncode == 2 and "sudo systemctl stop edge-agent" in sw.stderr, sw.stderr
    # other line settings than the daemon's are refused, by modbus as by scan
    for argv in (["modbus", "read", line.path, "1", "input", "0", "--baud", "19200"],
                 ["scan", line.path, "--baud", "19200"]):
        r = gw.cli(*argv)
        assert r.returncode == 2 and "at 9600 N, not 19200 N" in r.stderr, r.stderr

    # the line kept its timing and the polled meters never noticed
    assert line.violations == []
    after = failures(gw)
    assert after["meter-01"] == before["meter-01"] and after["meter-02"] == before["meter-02"]

    # a unit answering with an exception, a unit that is not there, bad requests
    gw.sim.fault("meter-02", "exception", exception_code=2)
    e = gw.cli("modbus", "read", "rs485-water", "2", "input", "0")
    assert e.returncode == 1 and "Modbus exception 2: illegal data address" in e.stderr
    gw.sim.fault("meter-02", "none")
    t = gw.cli("modbus", "read", "rs485-water", "9", "input", "0")
    assert t.returncode == 4 and "no answer in time" in t.stderr, t.stderr
    assert "is there a unit 9 on rs485-water" in t.stderr and "edge-agent scan rs485-water" \
        in t.stderr and "edge-agent devices" not in t.stderr, t.stderr  # not a device's history
    b = gw.cli("modbus", "read", "rs485-water", "1", "holding", "0", "200")
    assert b.returncode == 2 and "1..125 registers" in b.stderr
    b = gw.cli("modbus", "read", "rs485-watr", "1", "holding", "0")
    assert b.returncode == 2 and "did you mean 'rs485-water'" in b.stderr
    b = gw.cli("modbus", "read", "nbiot", "1", "holding", "0")
    assert b.returncode == 2 and "AT-command line" in b.stderr

    # the daemon stopped: straight on the port, by bus name (config) or by port path
    gw.proc.send_signal(signal.SIGTERM)
    assert gw.proc.wait(20) == 0
    d = gw.cli("modbus", "read", "rs485-water", "1", "input", "0", "2", "--config",
               str(gw.config), "--json")
    assert d.returncode == 0, d.stderr
    assert json.loads(d.stdout)["via"] == "direct"
    d = gw.cli("modbus", "read", line.path, "1", "input", "4", "--baud", "9600")
    assert d.returncode == 0 and "direct" in d.stdout, d.stderr
    d = gw.cli("modbus", "read", "pole-01", "1", "holding", "0", "--config", str(gw.config))
    assert d.returncode == 0 and "direct" in d.stdout, d.stderr
    # scan knows the config's bus names too, and which device the config has on each unit
    sc = gw.cli("scan", "rs485-water", "--units", "1-3", "--config", str(gw.config), "--json",
                timeout=60)
    assert sc.returncode == 0, sc.stderr
    assert {f["unit"]: f["configured_as"] for f in json.loads(sc.stdout)} == {
        1: "meter-01", 2: "meter-02"}
    sc = gw.cli("scan", line.path, "--units", "2-2", "--config", str(gw.config), timeout=60)
    assert sc.returncode == 0 and re.search(r"\s2\s.*water_meter.*meter-02$", sc.stdout, re.M), \
        sc.stdout
    assert line.violations == []


def scan(gw: Gateway, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*CLI, "scan", "rs485-water", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, EDGE_AGENT_SOCKET=str(gw.socket_path)))


@pytest.mark.timeout(240)
def test_a_scan_through_the_daemon_stops_at_once_and_keeps_its_finds(gateway: Gateway) -> None:
    gw = gateway
    assert wait(lambda: gw.cli("read", "meter-02", "totalizer").returncode == 0, 30)
    # Ctrl-C: the scan (245 absent units to go, ~2 minutes) ends within seconds, with its finds
    proc = scan(gw, "--timeout", "0.5")
    time.sleep(8)  # units 1 and 2 found and ranked, unit 3.. being probed
    assert proc.poll() is None, proc.communicate()
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert time.monotonic() - t0 < 5, "Ctrl-C was ignored during the scan"
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert re.search(r"^9600\s+N\s+1\s.*meter-01$", out, re.M), out
    assert re.search(r"^9600\s+N\s+2\s.*meter-02$", out, re.M), out
    assert "interrupted after" in out
    assert wait(lambda: re.search(r"modbus_scan bus=rs485-water probed=\d+ answered=2 ",
                                  gw.log_text()) is not None, 5), gw.log_text()[-2000:]
    # the daemon stops mid-scan: the finds so far, then the one-line error
    proc = scan(gw, "--timeout", "0.5")
    time.sleep(8)
    gw.proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert gw.proc.wait(20) == 0
    assert proc.returncode in (1, 3), (proc.returncode, out, err)
    assert re.search(r"^9600\s+N\s+2\s.*meter-02$", out, re.M), out
    (line,) = err.strip().splitlines()
    assert line.startswith("edge-agent scan: the scan stopped at unit "), line
    assert "the units found so far" in out
