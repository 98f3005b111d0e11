"""The daemon end to end: systemd-like life cycle, signed batches to a real broker, remote
commands, the technician CLI, reload, shutdown."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Mapping
from pathlib import Path

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
)

from edge_agent.commands.model import Action, Command, decode_result, encode_command
from edge_agent.readings import Reading
from edge_agent.trust.archive import iter_archive
from edge_agent.trust.cose import bstr_head, sign1, verify1
from edge_agent.trust.ed25519 import PublicKey
from edge_agent.trust.keys import kid_of, public_pem
from edge_agent.trust.verify import ChainVerifier
from tests.support_broker import Subscriber

from .conftest import GW, Gateway


def wait(pred: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return bool(pred())  # type: ignore[operator]


def command(gw: Gateway, action: Action, ctr: int, **kw: object) -> bytes:
    now = int(time.time())
    cmd = Command(os.urandom(16), now, now + 120, ctr, GW, action,
                  str(kw.get("device", "")), str(kw.get("point", "")),
                  kw.get("value"))  # type: ignore[arg-type]
    return sign1(encode_command(cmd), gw.operator, kid_of(gw.operator.public_key()))


@pytest.mark.timeout(120)
def test_life_cycle_batches_and_clean_stop(gateway: Gateway) -> None:
    gw = gateway
    sub = Subscriber(gw.broker.port, f"edge/{GW}/#")
    try:
        keys = {kid_of(gw.gateway_key.public_key()): gw.gateway_key.public_key()}
        want = {"lamp-01", "env-02", "meter-01", "meter-02", "nbiot-1"}

        def seen() -> set[str]:
            return {r.device for p in sub.payloads(f"edge/{GW}/data")
                    for r in _readings(p, keys)}

        assert wait(lambda: want <= seen(), 45), (seen(), gw.log_text()[-2000:])
        assert gw.wait_notify("WATCHDOG=1", 10)
        # start-up's objects frozen out of the collector's scans (platform/runtime.py)
        assert re.search(r"runtime_tuned when=started gc_frozen=[1-9]", gw.log_text())
        status = [json.loads(p) for p in sub.payloads(f"edge/{GW}/status")]
        assert any(s["state"] == "online" for s in status)
        gw.proc.send_signal(signal.SIGTERM)
        assert gw.proc.wait(20) == 0, gw.log_text()[-2000:]
        assert gw.wait_notify("STOPPING=1", 1)
        assert wait(lambda: json.loads(sub.payloads(f"edge/{GW}/status")[-1])["state"]
                    == "offline", 5)
        v = ChainVerifier(keys)
        for p in sub.payloads(f"edge/{GW}/data"):
            v.feed(p)
        rep = v.summary()
        assert rep.ok and rep.batches >= 5 and rep.readings > 0, rep
    finally:
        sub.close()


def _readings(msg: bytes, keys: Mapping[bytes, PublicKey]) -> list[Reading]:
    from edge_agent.trust.batch import decode_payload

    _, payload = verify1(msg, keys)
    return list(decode_payload(payload).readings)


@pytest.mark.timeout(120)
def test_remote_commands(gateway: Gateway) -> None:
    gw = gateway
    res_topic = f"edge/{GW}/cmd/res"
    sub = Subscriber(gw.broker.port, res_topic)
    gkeys = {kid_of(gw.gateway_key.public_key()): gw.gateway_key.public_key()}
    pub = Subscriber(gw.broker.port, "unused/#")
    try:
        def send(msg: bytes) -> dict[str, object]:
            n = len(sub.payloads())
            pub.client.publish(f"edge/{GW}/cmd", msg, qos=1).wait_for_publish(5)
            assert wait(lambda: len(sub.payloads()) > n, 20), gw.log_text()[-2000:]
            _, payload = verify1(sub.payloads()[-1], gkeys)  # signed by the gateway
            r = decode_result(payload)
            return {"ok": r.ok, "reason": r.reason, "value": r.value}

        assert wait(lambda: gw.cli("read", "lamp-01", "power").returncode == 0, 20)
        before = json.loads(gw.cli("read", "lamp-01", "power", "--json").stdout)["power"]
        assert before == pytest.approx(120.0, abs=1.0)
        ok = send(command(gw, Action.WRITE, 1, device="lamp-01", point="dimming", value=50))
        assert ok == {"ok": True, "reason": "", "value": 50}
        assert wait(lambda: json.loads(gw.cli("read", "lamp-01", "power", "--json").stdout)
                    ["power"] == pytest.approx(60.0, abs=1.0), 15)
        first = command(gw, Action.WRITE, 2, device="lamp-01", point="dimming", value=70)
        assert send(first)["ok"] is True
        assert send(first)["reason"] == "replayed_id"
        assert send(command(gw, Action.WRITE, 1, device="lamp-01", point="dimming",
                            value=20))["reason"] == "replayed_counter"
        assert send(command(gw, Action.WRITE, 3, device="lamp-01", point="dimming",
                            value=101))["reason"] == "out_of_bounds"
        assert send(command(gw, Action.WRITE, 4, device="lamp-01", point="power",
                            value=1))["reason"] == "not_writable"
        assert send(command(gw, Action.WRITE, 5, device="lamp-99", point="dimming",
                            value=1))["reason"] == "unknown_device"
        assert send(b"\xd2\x84garbage")["reason"] == "malformed"
        forged = bytearray(command(gw, Action.WRITE, 7, device="lamp-01", point="dimming",
                                   value=10))
        forged[-1] ^= 1
        assert send(bytes(forged))["reason"] == "bad_signature"
        stranger = Ed25519PrivateKey.generate()
        now = int(time.time())
        alien = Command(os.urandom(16), now, now + 60, 8, GW, Action.PING)
        assert send(sign1(encode_command(alien), stranger, kid_of(stranger.public_key())))[
            "reason"] == "unknown_kid"
        kid = kid_of(gw.operator.public_key())
        protected = cbor2.dumps({1: -7, 4: kid}, canonical=True)
        body = encode_command(alien)
        es256 = (b"\xd2\x84" + bstr_head(len(protected)) + protected + b"\xa0"
                 + bstr_head(len(body)) + body + b"\x58\x40" + bytes(64))
        assert send(es256)["reason"] == "wrong_alg"
        old = Command(os.urandom(16), now - 4000, now - 1000, 9, GW, Action.PING)
        assert send(sign1(encode_command(old), gw.operator, kid))["reason"] == "expired"
        future = Command(os.urandom(16), now + 4000, now + 4100, 10, GW, Action.PING)
        assert send(sign1(encode_command(future), gw.operator, kid))["reason"] == (
            "not_yet_valid")
        assert send(command(gw, Action.WRITE, 11, device="lamp-01", point="brightness",
                            value=1))["reason"] == "unknown_point"
        assert send(command(gw, Action.WRITE, 12, device="lamp-01", point="light_mode",
                            value="disco"))["reason"] == "out_of_bounds"
        assert send(command(gw, Action.WRITE, 13, device="lamp-01", point="light_mode",
                            value="manual"))["value"] == "manual"
        assert send(command(gw, Action.PING, 14))["value"] == "pong"
        log = gw.log_text()
        for reason in ("replayed_id", "replayed_counter", "out_of_bounds", "not_writable",
                       "unknown_device", "malformed", "bad_signature", "unknown_kid", "wrong_alg",
                       "expired", "not_yet_valid", "unknown_point"):
            assert f"accepted=false reason={reason}" in log, reason
        assert log.count("command_audit") == 17
        # once the signature held, every refusal names its signer; before, nobody is named
        audits = [x for x in log.splitlines() if "command_audit" in x]
        for reason in ("replayed_id", "replayed_counter", "out_of_bounds", "not_writable",
                       "unknown_device", "expired", "not_yet_valid", "unknown_point"):
            mine = [x for x in audits if f"reason={reason}" in x]
            assert mine and all(f"kid={kid.hex()} " in x for x in mine), (reason, mine)
        for reason in ("malformed", "bad_signature", "unknown_kid", "wrong_alg"):
            mine = [x for x in audits if f"reason={reason}" in x]
            assert mine and all(" kid=- " in x for x in mine), (reason, mine)
        assert json.loads(gw.cli("read", "lamp-01", "dimming", "--json").stdout)["dimming"] == 70
    finally:
        sub.close()
        pub.close()


@pytest.mark.timeout(200)
def test_technician_cli(gateway: Gateway, tmp_path: Path) -> None:
    gw = gateway
    assert wait(lambda: gw.cli("status").returncode == 0, 20)
    st = json.loads(gw.cli("status", "--json").stdout)
    assert st["gateway_id"] == GW and st["devices"]["total"] == 7
    assert wait(lambda: json.loads(gw.cli("status", "--json").stdout)["uplink"]["connected"], 20)
    devs = json.loads(gw.cli("devices", "--json").stdout)
    assert {d["name"] for d in devs} >= {"lamp-01", "meter-02", "nbiot-1"}
    metrics = gw.dir / "metrics.prom"
    assert wait(lambda: metrics.exists(), 10)
    text = metrics.read_text()
    assert 'edge_agent_devices{gateway="gw-e2e",state="up"}' in text
    assert 'edge_agent_device_failures_total{gateway="gw-e2e",device="meter-01"' in text
    assert 'edge_agent_healthy{gateway="gw-e2e"} 1' in text
    assert 'edge_agent_outbox_footprint_bytes{gateway="gw-e2e"}' in text
    table = gw.cli("devices").stdout
    assert "meter-01" in table and "rs485-water" in table
    w = gw.cli("write", "lamp-02", "dimming", "30", "--yes", "--json")
    assert w.returncode == 0 and json.loads(w.stdout)["confirmed"] == 30, w.stderr
    bad = gw.cli("write", "lamp-02", "dimming", "300", "--yes")
    assert bad.returncode == 1 and "above the maximum" in bad.stderr, bad.stderr
    t = gw.cli("tail", "--json", "--count", "3", "--class", "water_meter", timeout=60)
    rows = [json.loads(line) for line in t.stdout.splitlines()]
    assert len(rows) == 3 and all(r["device"].startswith("meter-") for r in rows)
    # uplink dead for a while: the outbox fills, the technician carries the data away
    gw.broker.stop()
    assert wait(lambda: json.loads(gw.cli("buffer", "--json").stdout)["depth"] >= 3, 30)
    usb = tmp_path / "usb"
    usb.mkdir()
    e = gw.cli("buffer", "export", str(usb), "--json")
    assert e.returncode == 0, e.stderr
    res = json.loads(e.stdout)
    assert res["batches"] >= 3 and res["gateway"] == GW
    archive = Path(res["file"])
    assert [p.name for p in usb.iterdir()] == [archive.name]  # ONE file, no temp left
    pub = tmp_path / "gw.pub"
    pub.write_bytes(public_pem(gw.gateway_key))
    v = gw.cli("verify", "--file", str(archive), "--key", str(pub))
    assert v.returncode == 0, v.stdout + v.stderr
    assert "result=OK" in v.stdout
    # back at the office: publish the stick's batches to a broker, in seq order, acknowledged
    gw.broker.start()
    sub = Subscriber(gw.broker.port, f"edge/{GW}/data")
    try:
        imp = gw.cli("buffer", "import", str(archive), "--broker",
                     f"127.0.0.1:{gw.broker.port}", "--json")
        assert imp.returncode == 0, imp.stderr
        assert json.loads(imp.stdout)[GW] == res["batches"]
        exported = [d for _, d in iter_archive(archive)]
        assert wait(lambda: set(exported) <= set(sub.payloads()), 10)
    finally:
        sub.close()
    # tamper with one exported batch: verify fails loudly
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    bad = gw.cli("verify", "--file", str(archive), "--key", str(pub))
    assert bad.returncode == 1, bad.stdout + bad.stderr
    # the uplink's backoff may be up to its cap away from the next attempt
    assert wait(lambda: json.loads(gw.cli("buffer", "--json").stdout)["depth"] == 0, 75)


@pytest.mark.timeout(120)
def test_reload(gateway: Gateway) -> None:
    gw = gateway
    good = gw.config.read_text()
    gw.config.write_text(good.replace('profile = "street_lamp"', 'profile = "street_lmap"', 1))
    gw.proc.send_signal(signal.SIGHUP)
    assert wait(lambda: "config_reload_rejected" in gw.log_text(), 15)
    assert "street_lamp" in gw.log_text() or "did you mean" in gw.log_text()
    assert gw.cli("status").returncode == 0 and gw.proc.poll() is None
    # changing the uplink needs a restart: the reload is refused whole, the running config kept
    gw.config.write_text(good.replace("status_interval = 1", "status_interval = 2"))
    gw.proc.send_signal(signal.SIGHUP)
    assert wait(lambda: "needs_restart=uplink" in gw.log_text(), 15)
    assert "config_reloaded" not in gw.log_text()
    # a valid change (one pole less) is applied
    lines = good.split("\n[[devices]]")
    kept = [b for b in lines if 'name = "env-02"' not in b]
    gw.config.write_text("\n[[devices]]".join(kept))
    gw.proc.send_signal(signal.SIGHUP)
    assert wait(lambda: "config_reloaded" in gw.log_text(), 15), gw.log_text()[-2000:]
    assert wait(lambda: "runtime_tuned when=reloaded gc_frozen=" in gw.log_text(), 5)
    assert wait(lambda: json.loads(gw.cli("status", "--json").stdout)["devices"]["total"] == 6,
                10)
