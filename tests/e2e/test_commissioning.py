"""`edge-agent modbus read|write`: raw registers through the daemon's bus owner while it runs (the
shared RS-485 line keeps its timing, the polled meters record no failure, a write is audited),
straight on the port once it is stopped (by bus name from the config, or by port path)."""

from __future__ import annotations

import json
import re
import signal

import pytest

from .conftest import Gateway
from .test_daemon import wait


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

    # a scan of the line goes through the daemon too, between its polls
    sc = gw.cli("scan", line.path, "--units", "1-4", "--json", timeout=120)
    assert sc.returncode == 0, sc.stderr
    units = {f["unit"]: f for f in json.loads(sc.stdout)}
    assert set(units) == {1, 2} and units[1]["configured_as"] == "meter-01"
    assert units[2]["profiles"][0] == "water_meter"
    sw = gw.cli("scan", "rs485-water", "--sweep")
    assert sw.returncode == 2 and "sudo systemctl stop edge-agent" in sw.stderr, sw.stderr

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
    assert line.violations == []
