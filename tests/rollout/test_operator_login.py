"""The operator tools log in to a real mosquitto that requires it: a password (from a file or the
environment, never argv), a client certificate; a refused login is named as such."""

from __future__ import annotations

import json
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from tests.support_broker import Mosquitto, make_tls

from .fleet import run_cli

STATUS = {"state": "online", "gateway": "gw-1", "ts_ms": 0, "version": "x",
          "config": {"version": 3}}


def _retain_status(port: int) -> None:
    """A gateway's retained status, put there over the broker's open test listener."""
    c = paho.Client(CallbackAPIVersion.VERSION2)
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        c.publish("edge/gw-1/status", json.dumps(STATUS), qos=1, retain=True).wait_for_publish(5)
    finally:
        c.disconnect()
        c.loop_stop()


def test_password_from_a_file_or_the_environment_and_a_refusal_named(tmp_path: Path) -> None:
    b = Mosquitto(tmp_path / "auth", passwords={"ops": "s3cret"})
    b.start()
    try:
        _retain_status(b.plain_port)
        broker = f"127.0.0.1:{b.port}"
        anon = run_cli("fleet", "status", "--broker", broker, "--wait", "0.5")
        assert anon.returncode == 3, anon.stdout + anon.stderr
        assert "not authorised" in anon.stderr and "--username" in anon.stderr
        assert "did not confirm" not in anon.stderr
        wrong = tmp_path / "wrong"
        wrong.write_text("nope\n")
        bad = run_cli("fleet", "status", "--broker", broker, "--username", "ops",
                      "--password-file", str(wrong), "--wait", "0.5", "--json")
        assert bad.returncode == 3 and json.loads(bad.stdout)["error"] == "not_authorised"
        pw = tmp_path / "pw"
        pw.write_text("s3cret\n")
        ok = run_cli("fleet", "status", "--broker", broker, "--username", "ops",
                     "--password-file", str(pw), "--wait", "1", "--json")
        assert ok.stdout and [g["gateway"] for g in json.loads(ok.stdout)["gateways"]] == [
            "gw-1"], ok.stderr
        env = run_cli("fleet", "status", "--broker", broker, "--username", "ops", "--wait", "1",
                      "--json", env={"EDGE_AGENT_MQTT_PASSWORD": "s3cret"})
        assert json.loads(env.stdout)["gateways"], env.stderr
        # verify --broker shares the options and the words
        key = tmp_path / "gw.pub"
        key.write_bytes(bytes(32))
        v = run_cli("verify", "--broker", broker, "--key", str(key), "--duration", "3",
                    "--username", "ops", "--password-file", str(wrong))
        assert v.returncode != 0 and "not authorised" in v.stderr, v.stdout + v.stderr
        v = run_cli("verify", "--broker", broker, "--key", str(key), "--duration", "1",
                    "--username", "ops", "--password-file", str(pw))
        assert v.returncode == 0 and "result=OK" in v.stdout, v.stdout + v.stderr
    finally:
        b.stop()


def test_client_certificate(tmp_path: Path) -> None:
    tls = make_tls(tmp_path / "pki")
    b = Mosquitto(tmp_path / "mtls", tls=tls, require_client_cert=True)
    b.start()
    try:
        _retain_status(b.plain_port)
        broker = f"localhost:{b.port}"
        without = run_cli("fleet", "status", "--broker", broker, "--tls-ca", str(tls.ca),
                          "--wait", "0.5")
        assert without.returncode == 3, without.stdout + without.stderr
        assert "--tls-cert" in without.stderr
        half = run_cli("fleet", "status", "--broker", broker, "--tls-cert",
                       str(tls.client_cert))
        assert half.returncode == 2 and "--tls-key" in half.stderr
        ok = run_cli("fleet", "status", "--broker", broker, "--tls-ca", str(tls.ca),
                     "--tls-cert", str(tls.client_cert), "--tls-key", str(tls.client_key),
                     "--wait", "1", "--json")
        assert ok.stdout and json.loads(ok.stdout)["gateways"], ok.stderr
    finally:
        b.stop()
