"""The technician's tools that work without the daemon: read --direct (doctor: test_doctor.py)."""

from __future__ import annotations

import json
import signal

import pytest

from .conftest import Gateway


@pytest.mark.timeout(120)
def test_read_direct_when_daemon_is_stopped(gateway: Gateway) -> None:
    gw = gateway
    gw.proc.send_signal(signal.SIGTERM)
    assert gw.proc.wait(20) == 0
    no_daemon = gw.cli("read", "lamp-01", "power")
    assert no_daemon.returncode == 3 and "daemon" in no_daemon.stderr
    r = gw.cli("read", "lamp-01", "--direct", "--config", str(gw.config), "--json")
    assert r.returncode == 0, r.stderr
    values = json.loads(r.stdout)
    assert values["power"] == pytest.approx(120.0, abs=1.0) and values["lamp_on"] is True
    m = gw.cli("read", "meter-02", "flow_rate", "--direct", "--config", str(gw.config), "--json")
    assert m.returncode == 0, m.stderr
    assert isinstance(json.loads(m.stdout)["flow_rate"], float)
    # the simulated RS-485 line saw a master that kept the silent interval
    assert gw.sim.lines["rs485-water"].violations == []
