"""The technician's tools that work without the daemon: read --direct (doctor: test_doctor.py)."""

from __future__ import annotations

import json
import re
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


@pytest.mark.timeout(120)
def test_read_shows_the_pollers_quality_through_the_daemon_and_direct(gateway: Gateway) -> None:
    """dimming 200 % (a writable point: min 0, max 100, no valid_range) is out_of_range for the
    poller; `read` says so, through the daemon (its own verdict) and --direct (the same rule)."""
    gw = gateway
    gw.sim.fault("lamp-01", "out_of_range")

    def dimming_line(out: str) -> str:
        return next(ln for ln in out.splitlines() if ln.split()[:1] == ["dimming"])

    r = gw.cli("read", "lamp-01")
    assert r.returncode == 0, r.stderr
    assert "OUT OF RANGE (above 100)" in dimming_line(r.stdout), r.stdout
    assert "200" in dimming_line(r.stdout)
    # the daemon's own verdict for a valid_range point too, and "ok" where it is plausible
    assert "OUT OF RANGE (above" in next(ln for ln in r.stdout.splitlines()
                                         if ln.split()[:1] == ["tilt_angle"]), r.stdout
    one = gw.cli("read", "lamp-01", "dimming", "--json")
    assert one.returncode == 0 and json.loads(one.stdout) == {"dimming": 200}, one.stdout
    gw.proc.send_signal(signal.SIGTERM)
    assert gw.proc.wait(20) == 0
    d = gw.cli("read", "lamp-01", "--direct", "--config", str(gw.config))
    assert d.returncode == 0, d.stderr
    assert "OUT OF RANGE (above 100)" in dimming_line(d.stdout), d.stdout
    gw.sim.fault("lamp-01", "none")
    ok = gw.cli("read", "lamp-01", "dimming", "--direct", "--config", str(gw.config))
    # columns: point, value, quality, age (two or more spaces apart)
    assert ok.returncode == 0, ok.stderr
    assert re.split(r"\s{2,}", dimming_line(ok.stdout).strip())[2] == "ok", ok.stdout
