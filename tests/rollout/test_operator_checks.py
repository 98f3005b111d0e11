"""The operator tools on a real mosquitto, without a gateway: a result whose signature fails under
the --gateway-key given is shown and marked, never counted; a public key given to `config sign`
where the private key is needed is refused, saying so."""

from __future__ import annotations

import json
import time
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.rollout.results import RolloutResult, encode_result
from edge_agent.trust.cose import sign1
from edge_agent.trust.keys import generate_signing_key, kid_of, public_pem
from tests.support_broker import Mosquitto

from .fleet import run_cli
from .helpers import managed


def _retain(port: int, items: dict[str, bytes]) -> None:
    c = paho.Client(CallbackAPIVersion.VERSION2)
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        for topic, payload in items.items():
            c.publish(topic, payload, qos=1, retain=True).wait_for_publish(5)
    finally:
        c.disconnect()
        c.loop_stop()


def test_a_result_failing_its_signature_is_marked_not_counted(tmp_path: Path) -> None:
    real = generate_signing_key(tmp_path / "gw.key")
    (tmp_path / "gw.pub").write_bytes(public_pem(real))
    op = tmp_path / "op.key"
    generate_signing_key(op)
    (tmp_path / "m.toml").write_text(managed())
    bundle = tmp_path / "b.cose"
    done = run_cli("config", "sign", str(tmp_path / "m.toml"), "--key", str(op), "--version",
                   "4", "--gateway", "gw-1", "--out", str(bundle))
    assert done.returncode == 0, done.stderr
    forger = generate_signing_key(tmp_path / "forger.key")
    fake = RolloutResult("gw-1", 4, "committed", "", time.time_ns())
    forged = sign1(encode_result(fake), forger, kid_of(forger.public_key()))
    status = {"state": "online", "gateway": "gw-1", "ts_ms": time.time_ns() // 1_000_000,
              "config": {"version": 3}}
    b = Mosquitto(tmp_path / "broker")
    b.start()
    try:
        _retain(b.port, {"edge/gw-1/config/res": forged,
                         "edge/gw-1/status": json.dumps(status).encode()})
        broker = f"127.0.0.1:{b.port}"
        key = ["--gateway-key", str(tmp_path / "gw.pub")]
        send = run_cli("config", "send", str(bundle), "--broker", broker, "--gateway", "gw-1",
                       "--wait", "3", *key)
        assert send.returncode == 4, send.stdout + send.stderr  # no (true) final result
        assert "committed (SIGNATURE FAILS" in send.stdout, send.stdout
        roll = run_cli("fleet", "rollout", str(bundle), "--broker", broker, "--timeout", "3",
                       "--json", *key)
        out = json.loads(roll.stdout)
        assert roll.returncode == 1 and not out["complete"], out
        assert out["gateways"]["gw-1"]["outcome"] == "unverified", out
        assert "gw-1: its results fail their signature" in out["stopped"]
        # without a key nothing is verified, and the table says so
        text = run_cli("fleet", "rollout", str(bundle), "--broker", broker, "--timeout", "3")
        assert "committed (unverified)" in text.stdout, text.stdout + text.stderr
    finally:
        b.stop()


def test_a_public_key_given_to_sign_is_refused_clearly(tmp_path: Path) -> None:
    key = generate_signing_key(tmp_path / "op.key")
    pub = tmp_path / "op.pub"
    pub.write_bytes(public_pem(key))
    pub.chmod(0o644)
    (tmp_path / "m.toml").write_text(managed())
    done = run_cli("config", "sign", str(tmp_path / "m.toml"), "--key", str(pub), "--version",
                   "1", "--gateway", "gw-1", "--out", str(tmp_path / "b.cose"))
    assert done.returncode != 0 and not (tmp_path / "b.cose").exists()
    assert "holds a public key" in done.stderr and "private key" in done.stderr, done.stderr
    assert "permissive" not in done.stderr
