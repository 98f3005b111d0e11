"""`edge-agent doctor` answers for the service: as root it checks as the unit's user (here a
throwaway uid), as a technician it SKIPs what it cannot see instead of failing; a down broker, an
unreachable endpoint, an expired certificate FAIL; exit 1 exactly when a line FAILs."""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edge_agent.config.load import load_config
from edge_agent.config.model import SerialBus
from edge_agent.trust.keys import generate_signing_key
from simulators.loopback import free_port
from tests.support_broker import Mosquitto, make_tls

from .conftest import Gateway
from .technician import free_uid, need_root, open_dir, run_cli_as, sock_gid


def _by_name(out: str) -> dict[str, list[dict[str, Any]]]:
    got: dict[str, list[dict[str, Any]]] = {}
    for c in json.loads(out):
        got.setdefault(c["name"], []).append(c)
    return got


def _statuses(out: str) -> dict[str, str]:
    """name -> the worst status of its lines."""
    order = ["PASS", "SKIP", "WARN", "FAIL"]
    return {n: max((c["status"] for c in cs), key=order.index) for n, cs in _by_name(out).items()}


def _hand_to(gw: Gateway, uid: int) -> Path:
    """What scripts/install + provision do for the service user: it owns its state and key, the
    key in a directory only it may enter (as provision lays down /var/lib/edge-agent/keys 0700),
    its serial ports are open to it; a unit file naming it."""
    buses = load_config(gw.config).buses.values()
    keys = gw.dir / "keys"
    keys.mkdir(mode=0o700)
    os.rename(gw.dir / "signing.key", keys / "signing.key")
    text = gw.config.read_text()
    gw.config.write_text(text.replace(str(gw.dir / "signing.key"), str(keys / "signing.key")))
    for p in (keys, keys / "signing.key", gw.dir / "state", gw.dir / "state" / "outbox.db"):
        if p.exists():
            os.chown(p, uid, uid)
    for bus in buses:
        if isinstance(bus, SerialBus):
            os.chown(bus.port, uid, uid)  # the pty slave: dialout's role on a real box
    unit = gw.dir.parent / "edge-agent.service"
    unit.write_text(f"[Unit]\nDescription=test\n\n[Service]\nUser={uid}\nGroup={uid}\n")
    return unit


def _wait(pred: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.3)
    return bool(pred())


@pytest.mark.timeout(180)
def test_doctor_as_root_checks_as_the_service_user(open_gateway: Gateway) -> None:
    gw = open_gateway
    svc = free_uid()
    unit = _hand_to(gw, svc)
    args = ["doctor", "--config", str(gw.config), "--unit", str(unit), "--json"]
    assert _wait(lambda: json.loads(gw.cli("status", "--json").stdout)["uplink"]["connected"], 20)
    ok = gw.cli(*args)
    st = _statuses(ok.stdout)
    assert ok.returncode == 0, ok.stdout
    assert "FAIL" not in st.values(), ok.stdout
    for name in ("service user", "config", "signing key", "state dir", "serial rs485-water",
                 "disk", "endpoint pole-01", "broker", "daemon", "uplink", "devices", "outbox",
                 "clock"):
        assert st.get(name) in ("PASS", "WARN"), (name, ok.stdout)
    assert "checked as it" in _by_name(ok.stdout)["service user"][0]["detail"]
    assert st["clock"] == "PASS" or st["clock"] == "WARN"  # a verdict, and never exit 1 alone

    # the key is root's again: root could read it, the service cannot -> FAIL, named
    key = gw.dir / "keys" / "signing.key"
    os.chown(key, 0, 0)
    try:
        bad = gw.cli(*args)
        assert bad.returncode == 1
        key_lines = _by_name(bad.stdout)["signing key"]
        assert key_lines[0]["status"] == "FAIL" and "ermission denied" in key_lines[0]["detail"]
    finally:
        os.chown(key, svc, svc)
    # a key the rules call too open: the config's permission rules (check-config's) refuse it
    os.chmod(key, 0o644)
    try:
        bad = gw.cli(*args)
        assert bad.returncode == 1 and _statuses(bad.stdout)["config"] == "FAIL", bad.stdout
        assert any(c["status"] == "FAIL" and "keys.signing_key" in c["detail"]
                   and f"chmod 600 {key}" in c["detail"]
                   for c in _by_name(bad.stdout)["config"]), bad.stdout
    finally:
        os.chmod(key, 0o600)

    # an endpoint that stops answering and a broker that is down: FAIL, exit 1
    gw.endpoint_fault("pole-01", "refuse")
    # every device behind it has failed since (doctor counts a device answering until it fails)
    assert _wait(lambda: all(d["failures"] for d in json.loads(gw.cli("devices", "--json").stdout)
                             if d["bus"] == "pole-01"), 60)
    gw.broker.stop()
    try:
        down = gw.cli(*args)
        st = _statuses(down.stdout)
        assert down.returncode == 1, down.stdout
        assert st["endpoint pole-01"] == "FAIL" and st["broker"] == "FAIL", down.stdout
        assert st["endpoint pole-02"] == "PASS"
        human = gw.cli(*args[:-1])
        assert human.returncode == 1
        assert any(ln.startswith("[FAIL] broker") for ln in human.stdout.splitlines())
        assert "hint:" in human.stdout
    finally:
        gw.endpoint_fault("pole-01", "none")
        gw.broker.start()


@pytest.mark.timeout(180)
def test_doctor_as_a_technician_has_no_false_fail(open_gateway: Gateway) -> None:
    gw = open_gateway
    svc = free_uid()
    tech = free_uid(svc + 1)
    unit = _hand_to(gw, svc)
    args = ["doctor", "--config", str(gw.config), "--unit", str(unit), "--json"]
    env = {"EDGE_AGENT_SOCKET": str(gw.socket_path)}
    # in the control socket's group (root's here, or edge-agent where that group exists)
    r = run_cli_as(tech, args, groups=[sock_gid(gw)], env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    st, lines = _statuses(r.stdout), _by_name(r.stdout)
    assert "FAIL" not in st.values(), r.stdout
    assert st["signing key"] == "SKIP" and "sudo edge-agent doctor" in \
        lines["signing key"][0]["detail"]
    assert st["state dir"] == "PASS" and "mode bits" in lines["state dir"][0]["detail"]
    assert st["serial rs485-water"] == "PASS"
    assert st["daemon"] == "PASS" and st["broker"] == "PASS", r.stdout
    assert f"you are uid {tech}" in lines["service user"][0]["detail"]
    # not in the group: the daemon's view is SKIPped with the reason, still no FAIL
    r = run_cli_as(tech, args, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    daemon = _by_name(r.stdout)["daemon"][0]
    assert daemon["status"] == "SKIP" and "group" in daemon["detail"]
    # what IS wrong for the service is still found from a technician's seat (mode bits)
    os.chown(gw.dir / "state", 0, 0)
    os.chmod(gw.dir / "state", 0o755)
    try:
        r = run_cli_as(tech, args, groups=[sock_gid(gw)], env=env)
        assert r.returncode == 1 and _statuses(r.stdout)["state dir"] == "FAIL", r.stdout
    finally:
        os.chown(gw.dir / "state", svc, svc)


def _expired_cert(d: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gateway")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=400))
            .not_valid_after(now - dt.timedelta(days=2))
            .sign(key, hashes.SHA256()))
    c, k = d / "expired.crt", d / "expired.key"
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    os.chmod(k, 0o600)
    return c, k


@pytest.mark.timeout(120)
def test_doctor_tls_broker_certificates_and_unreachable_endpoint(tmp_path: Path) -> None:
    need_root()
    import subprocess
    import sys

    tls = make_tls(tmp_path / "tls")
    broker = Mosquitto(tmp_path / "broker", tls=tls)
    broker.start()
    try:
        generate_signing_key(tmp_path / "signing.key")
        closed = free_port()

        def config(ca: Path, cert: Path, key: Path) -> Path:
            cfg = tmp_path / "agent.toml"
            cfg.write_text(f"""gateway_id = "gw-doctor"
state_dir = "{tmp_path}/state"
runtime_dir = "{tmp_path}/run"

[[buses]]
name = "pole-x"
kind = "tcp"
host = "127.0.0.1"
port = {closed}

[[devices]]
name = "lamp-x"
profile = "street_lamp"
bus = "pole-x"

[uplink]
host = "localhost"
port = {broker.port}

[uplink.tls]
ca_file = "{ca}"
cert_file = "{cert}"
key_file = "{key}"

[keys]
signing_key = "{tmp_path}/signing.key"
""")
            return cfg

        unit = tmp_path / "edge-agent.service"
        unit.write_text("[Service]\nUser=root\n")

        def doctor(cfg: Path) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "edge_agent.cli.main", "doctor", "--config", str(cfg),
                 "--unit", str(unit), "--json"], capture_output=True, text=True, timeout=60,
                check=False, env=dict(os.environ, EDGE_AGENT_SOCKET=str(tmp_path / "no.sock")))

        good = doctor(config(tls.ca, tls.client_cert, tls.client_key))
        st = _statuses(good.stdout)
        assert st["broker"] == "PASS" and "TLS handshake ok" in good.stdout, good.stdout
        # the test CA and certificates live two days: valid, and said to expire soon
        assert st["tls ca"] == "WARN" and st["tls client cert"] == "WARN"
        assert "expires in 1 day " in _by_name(good.stdout)["tls client cert"][0]["detail"]
        assert st["tls client key"] == "PASS"
        assert st["endpoint pole-x"] == "FAIL" and "refused" in good.stdout.lower()
        assert st["daemon"] == "WARN"  # not running: said, not failed
        assert good.returncode == 1  # the endpoint
        # an expired client certificate
        cert, key = _expired_cert(tmp_path)
        old = doctor(config(tls.ca, cert, key))
        line = _by_name(old.stdout)["tls client cert"][0]
        assert line["status"] == "FAIL" and "expired on" in line["detail"], old.stdout
        # a CA that did not issue the broker's certificate: the handshake FAILs
        other = make_tls(tmp_path / "other", name="other")
        wrong = doctor(config(other.ca, tls.client_cert, tls.client_key))
        b = _by_name(wrong.stdout)["broker"][0]
        assert b["status"] == "FAIL" and "TLS handshake failed" in b["detail"], wrong.stdout
    finally:
        broker.stop()


@pytest.mark.timeout(120)
def test_doctor_for_a_technician_outside_the_group(tmp_path: Path) -> None:
    """The real layout: /etc/edge-agent 0750 root:edge-agent, agent.toml 0640 root:edge-agent. A
    technician outside the group cannot even look into the directory: doctor still reports what
    it can (the service user, the clock, the daemon) and SKIPs the rest with the way in."""
    need_root()
    svc = free_uid()
    tech = free_uid(svc + 1)
    with open_dir() as d:
        etc = d / "etc-edge-agent"
        etc.mkdir()
        config = etc / "agent.toml"
        config.write_text(f'gateway_id = "gw-x"\nstate_dir = "{d}/state"\n'
                          f'runtime_dir = "{d}/run"\n[keys]\nsigning_key = "{d}/signing.key"\n')
        for p, mode in ((etc, 0o750), (config, 0o640)):
            os.chown(p, 0, svc)
            p.chmod(mode)
        unit = d / "edge-agent.service"
        unit.write_text(f"[Service]\nUser={svc}\nGroup={svc}\n")
        unit.chmod(0o644)
        env = {"EDGE_AGENT_SOCKET": str(d / "run" / "control.sock")}
        for how in (["--config", str(config)], []):  # named, and from $EDGE_AGENT_CONFIG
            r = run_cli_as(tech, ["doctor", *how, "--unit", str(unit), "--offline", "--json"],
                           env=env | ({} if how else {"EDGE_AGENT_CONFIG": str(config)}))
            assert r.returncode == 0, r.stdout + r.stderr
            st, lines = _statuses(r.stdout), _by_name(r.stdout)
            assert "FAIL" not in st.values(), r.stdout
            cfg = lines["config"][0]
            assert cfg["status"] == "SKIP", r.stdout
            assert f"join group {svc}" in cfg["detail"], cfg
            assert "sudo edge-agent doctor" in cfg["detail"], cfg
            assert st["service user"] == "PASS" and "clock" in st and "daemon" in st, r.stdout
            rest = lines["needs the config"][0]
            assert rest["status"] == "SKIP" and "signing key" in rest["detail"], rest
        # in the group: the config is read and checked (this one lacks buses and devices)
        r = run_cli_as(tech, ["doctor", "--config", str(config), "--unit", str(unit),
                              "--offline", "--json"], groups=[svc], env=env)
        lines = _by_name(r.stdout)
        assert "needs the config" not in lines, r.stdout + r.stderr
        assert any("[[buses]]" in c["detail"] for c in lines["config"]), r.stdout
