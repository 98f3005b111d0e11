"""The technician's tools that work without the daemon: doctor, and read --direct."""

from __future__ import annotations

import json
import os
import signal

import pytest

from .conftest import Gateway


@pytest.mark.timeout(120)
def test_doctor_passes_then_names_what_is_wrong(gateway: Gateway) -> None:
    gw = gateway
    ok = gw.cli("doctor", "--config", str(gw.config), "--json")
    checks = {c["name"]: c for c in json.loads(ok.stdout)}
    assert ok.returncode == 0, ok.stdout
    assert checks["config"]["ok"] and checks["signing key"]["ok"] and checks["broker"]["ok"]
    assert checks["serial rs485-water"]["ok"] and checks["disk"]["ok"]
    # a key readable by others, a vanished serial port, a broker that is down
    key = gw.dir / "signing.key"
    os.chmod(key, 0o644)
    gw.broker.stop()
    try:
        bad = gw.cli("doctor", "--config", str(gw.config))
        assert bad.returncode == 1
        lines = bad.stdout.splitlines()
        assert any(ln.startswith("[FAIL] signing key") for ln in lines), bad.stdout
        assert any(ln.startswith("[FAIL] broker") for ln in lines), bad.stdout
        assert "hint: chmod 600" in bad.stdout or "chmod 600" in bad.stdout
        assert "[PASS] config" in bad.stdout
    finally:
        os.chmod(key, 0o600)
        gw.broker.start()


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
