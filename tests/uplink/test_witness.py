"""The chain witness on a real mosquitto: announced (retained) before the batches it covers, read
back before anything is published, a restored outbox moved past it, and a broker that refuses the
subscription logged once while publishing goes on after the bounded wait."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.config.model import UplinkConfig
from edge_agent.outbox.rechain import ChainGuard
from edge_agent.outbox.store import Outbox
from edge_agent.trust.batch import BatchSigner, decode_payload
from edge_agent.trust.cose import verify1
from edge_agent.trust.keys import kid_of
from edge_agent.trust.witness import Witness, read_witness, sign_witness
from edge_agent.uplink.mqtt import MqttUplink
from tests.outbox.chains import GATEWAY
from tests.support_broker import Mosquitto, Subscriber
from tests.uplink.conftest import FAST_RETRY, MakeSub
from tests.uplink.proxy import Proxy
from tests.uplink.streams import append_batches

CHAIN = f"edge/{GATEWAY}/chain"
DATA = f"edge/{GATEWAY}/data"


@pytest.fixture
def guarded() -> Iterator[list[MqttUplink]]:
    made: list[MqttUplink] = []
    yield made
    for up in made:
        up.stop()


def _uplink(made: list[MqttUplink], port: int, outbox: Outbox, signer: BatchSigner,
            key: Ed25519PrivateKey) -> MqttUplink:  # fmt: skip
    cfg = UplinkConfig(host="127.0.0.1", port=port, inflight=8, keepalive_s=5)
    up = MqttUplink(cfg, GATEWAY, outbox, boot_id="boot-uplink", retry=FAST_RETRY,
                    guard=ChainGuard(outbox, signer, key))  # fmt: skip
    made.append(up)
    up.start()
    return up


def _seq(msg: bytes, key: Ed25519PrivateKey) -> int:
    return decode_payload(verify1(msg, {kid_of(key.public_key()): key.public_key()})[1]).seq


@pytest.mark.timeout(30)
def test_witness_goes_out_before_the_batches_it_covers(
    broker: Mosquitto, outbox: Outbox, signer: BatchSigner, key: Ed25519PrivateKey,
    subscribe: MakeSub, guarded: list[MqttUplink],
) -> None:  # fmt: skip
    sub = subscribe(broker.port, f"edge/{GATEWAY}/+")
    up = _uplink(guarded, broker.port, outbox, signer, key)
    append_batches(signer, outbox, 30, 5, 0.01)
    assert up.wait_drained(15)
    announced = 0
    data = 0
    with sub._lock:
        stream = list(sub.messages)
    for topic, payload, _retain in stream:
        if topic == CHAIN:
            announced = read_witness(payload, key.public_key(), GATEWAY).seq
        elif topic == DATA:
            seq = _seq(payload, key)
            assert seq <= announced, f"batch {seq} published before a witness covered it"
            data += 1
    assert data >= 30 and announced == 30
    later = Subscriber(broker.port, CHAIN)  # retained: what a restarted gateway reads back
    try:
        assert later.wait_for(lambda: later.payloads(), 5)
        assert read_witness(later.payloads()[-1], key.public_key(), GATEWAY).seq == 30
    finally:
        later.close()


@pytest.mark.timeout(30)
def test_nothing_at_or_below_the_witness_is_published(
    broker: Mosquitto, outbox: Outbox, signer: BatchSigner, key: Ed25519PrivateKey,
    subscribe: MakeSub, guarded: list[MqttUplink],
) -> None:  # fmt: skip
    pub = Subscriber(broker.port, "unused/#")
    try:  # an earlier copy of this gateway's state had published up to seq 40
        w = sign_witness(key, Witness(GATEWAY, 40, b"\x05" * 32, 0))
        pub.client.publish(CHAIN, w, qos=1, retain=True).wait_for_publish(5)
    finally:
        pub.close()
    append_batches(signer, outbox, 12, 5)  # the restored state signed 1..12 offline
    sub = subscribe(broker.port, DATA)
    up = _uplink(guarded, broker.port, outbox, signer, key)
    assert up.wait_drained(15)
    assert sub.wait_for(lambda: len(sub.payloads()) >= 13, 5)
    seqs = [_seq(p, key) for p in sub.payloads()]
    assert min(seqs) == 41 and sorted(set(seqs)) == list(range(41, 54))
    first = decode_payload(verify1(sub.payloads()[0], {kid_of(key.public_key()):
                                                       key.public_key()})[1])  # fmt: skip
    assert first.kind == "resume" and first.prev == b"\x05" * 32


@pytest.mark.timeout(40)
def test_a_witness_the_broker_will_not_return_is_reported_once_and_publishing_goes_on(
    tmp_path: Path, outbox: Outbox, signer: BatchSigner, key: Ed25519PrivateKey,
    subscribe: MakeSub, guarded: list[MqttUplink], caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    b = Mosquitto(tmp_path / "acl")
    acl = tmp_path / "acl.txt"  # the gateway may write its witness but not read it back
    acl.write_text(f"topic readwrite edge/{GATEWAY}/data\ntopic write {CHAIN}\n"
                   f"topic readwrite edge/{GATEWAY}/status\n")  # fmt: skip
    b.conf.write_text(b.conf.read_text() + f"acl_file {acl}\n")
    b.start()
    proxy = Proxy(b.port)
    try:
        sub = subscribe(b.port, DATA)
        append_batches(signer, outbox, 5, 5)
        with caplog.at_level(logging.INFO, logger="edge_agent"):
            t0 = time.monotonic()
            up = _uplink(guarded, proxy.port, outbox, signer, key)
            assert up.wait_drained(15)
            assert time.monotonic() - t0 < 10  # the bounded wait, not forever
            for _ in range(2):  # reconnects: the announced witness does not come back
                sessions = up.stats.sessions
                proxy.cut()
                assert sub.wait_for(lambda: up.stats.sessions > sessions, 15)  # noqa: B023
                append_batches(signer, outbox, 2, 5)
                assert up.wait_drained(15)
        assert sub.wait_for(lambda: len({_seq(p, key) for p in sub.payloads()}) == 9, 5)
        assert caplog.text.count("chain_witness state=missing announced=") == 1
        assert "state=refused" in caplog.text or "state=none" in caplog.text
    finally:
        proxy.close()
        b.stop()
