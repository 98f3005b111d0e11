"""Uplink against a real mosquitto: order, PUBACK-only deletion, window, outages, status, caps."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.outbox.store import Outbox
from edge_agent.outbox.writer import make_gap_signer
from edge_agent.trust.batch import BatchSigner
from tests.outbox.chains import verify_all
from tests.support_broker import Mosquitto
from tests.uplink.conftest import MakeSub, MakeUplink
from tests.uplink.proxy import Proxy
from tests.uplink.streams import (
    append_batches,
    check_stream,
    first_arrivals,
    seq_of,
    status_docs,
)

DATA = "edge/gw-outbox-test/data"
STATUS = "edge/gw-outbox-test/status"


@pytest.mark.timeout(30)
@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_backlog_is_forwarded_in_seq_order_and_deleted(
    broker: Mosquitto, outbox: Outbox, signer: BatchSigner, key: Ed25519PrivateKey,
    subscribe: MakeSub, make_uplink: MakeUplink, protocol: str,
) -> None:  # fmt: skip
    sub = subscribe(broker.port)
    append_batches(signer, outbox, 60)
    up = make_uplink(broker.port, protocol=protocol)
    assert up.wait_drained(15)
    assert sub.wait_for(lambda: len(sub.payloads()) >= 60, 5)
    check_stream(key, sub.payloads(), 60)
    assert up.stats.acked == 60 and outbox.stats().depth == 0
    # live data keeps flowing after the backlog
    append_batches(signer, outbox, 5)
    assert sub.wait_for(lambda: len(sub.payloads()) >= 65, 5)
    check_stream(key, sub.payloads(), 65)


@pytest.mark.timeout(30)
def test_not_deleted_without_puback_and_window_is_bounded(
    broker: Mosquitto, proxy: Proxy, outbox: Outbox, signer: BatchSigner,
    key: Ed25519PrivateKey, subscribe: MakeSub, make_uplink: MakeUplink,
) -> None:  # fmt: skip
    sub = subscribe(broker.port)
    append_batches(signer, outbox, 30)
    up = make_uplink(proxy.port, inflight=8)
    assert up.wait_drained(10)  # session is up; now PUBACKs stop coming back
    proxy.swallow_replies = True
    append_batches(signer, outbox, 20)
    # the broker gets exactly one window of new batches, then nothing until acks come
    assert sub.wait_for(lambda: len(sub.payloads()) >= 38, 5)
    time.sleep(0.5)
    assert len(sub.payloads()) == 38
    assert outbox.stats().depth == 20  # published is not acknowledged: nothing deleted
    proxy.swallow_replies = False
    proxy.cut()  # keepalive would notice too; the cut makes the test fast
    assert up.wait_drained(10)
    check_stream(key, sub.payloads(), 50)


@pytest.mark.timeout(40)
def test_connection_cut_mid_stream_loses_nothing_and_will_is_published(
    broker: Mosquitto, proxy: Proxy, outbox: Outbox, signer: BatchSigner,
    key: Ed25519PrivateKey, subscribe: MakeSub, make_uplink: MakeUplink,
) -> None:  # fmt: skip
    sub = subscribe(broker.port)
    status = subscribe(broker.port, STATUS)
    up = make_uplink(proxy.port)
    done = threading.Event()

    def produce() -> None:
        append_batches(signer, outbox, 300, pace_s=0.003)
        done.set()

    t = threading.Thread(target=produce)
    t.start()
    try:
        for _ in range(4):
            time.sleep(0.15)
            proxy.cut()
    finally:
        t.join()
    assert done.is_set() and up.wait_drained(15)
    assert sub.wait_for(lambda: len({seq_of(p) for p in sub.payloads()}) >= 300, 5)
    check_stream(key, sub.payloads(), 300)
    assert proxy.accepted >= 3 and up.stats.sessions >= 3
    states = [d["state"] for d in status_docs(status.payloads())]
    assert "offline" in states and states[-1] == "online"  # will on each cut, birth after


@pytest.mark.timeout(60)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["term", "kill9"])
def test_broker_restarted_mid_stream_loses_nothing(
    tmp_path: Path, outbox: Outbox, signer: BatchSigner, key: Ed25519PrivateKey,
    subscribe: MakeSub, make_uplink: MakeUplink, sig: signal.Signals,
) -> None:  # fmt: skip
    b = Mosquitto(tmp_path / "persist", persistence=True)
    b.start()
    try:
        # a durable subscriber session, so messages queued while it reconnects are kept
        sub = subscribe(b.port, client_id="durable-sub", persistent=True)
        b.restart()  # graceful: the broker saves the subscriber's session to its database
        up = make_uplink(b.port)
        t = threading.Thread(target=append_batches, args=(signer, outbox, 250, 20, 0.006))
        t.start()
        try:
            for _ in range(2):
                time.sleep(0.3)
                b.stop(sig)
                time.sleep(0.2)
                b.start()
        finally:
            t.join()
        assert up.wait_drained(20)
        assert up.stats.sessions >= 3 and up.stats.acked == 250
        if sig == signal.SIGTERM:
            assert sub.wait_for(lambda: len({seq_of(p) for p in sub.payloads()}) == 250, 10)
            check_stream(key, sub.payloads(), 250)
        else:
            # kill -9: what the dead broker had PUBACKed but not yet delivered or saved is the
            # broker's loss, invisible to the uplink; at most a few batches around each kill.
            assert sub.wait_for(lambda: 250 in {seq_of(p) for p in sub.payloads()}, 10)
            order = first_arrivals(sub.payloads())
            assert order == sorted(order)
            assert len(set(range(1, 251)) - set(order)) <= 2 * 8
    finally:
        b.stop()


@pytest.mark.timeout(30)
def test_tiny_cap_during_outage_sends_gap_notices_the_verifier_accepts(
    tmp_path: Path, broker: Mosquitto, signer: BatchSigner, key: Ed25519PrivateKey,
    subscribe: MakeSub, make_uplink: MakeUplink,
) -> None:  # fmt: skip
    box = Outbox(tmp_path / "tiny.db", cap_bytes=256 * 1024, gap_signer=make_gap_signer(signer))
    try:
        sub = subscribe(broker.port)
        append_batches(signer, box, 1000)  # outage: nobody forwards yet
        st = box.stats()
        assert st.gaps >= 1 and st.batches_dropped > 0
        up = make_uplink(broker.port, box=box)
        assert up.wait_drained(10)
        expect = st.depth
        assert sub.wait_for(lambda: len(sub.payloads()) >= expect, 5)
        report = verify_all(key, sub.payloads())
        up.stop()
        assert report.gap_notices == 1 < st.gaps  # each drop merged the notice before it
        assert report.gaps_unexplained == 0 and report.broken_chain == 0 and report.forged == 0
        assert report.gaps_explained <= st.batches_dropped  # not counted before the 1st seen
        assert report.readings_dropped == st.readings_dropped
        assert report.readings + report.readings_dropped == 1000 * 20  # every reading accounted
    finally:
        box.close()


@pytest.mark.timeout(20)
def test_birth_status_and_clean_offline(
    broker: Mosquitto, outbox: Outbox, signer: BatchSigner, subscribe: MakeSub,
    make_uplink: MakeUplink,
) -> None:  # fmt: skip
    append_batches(signer, outbox, 3)
    up = make_uplink(broker.port)
    assert up.wait_drained(5)  # connected, birth published before the subscriber exists
    status = subscribe(broker.port, STATUS)
    assert status.wait_for(lambda: len(status.payloads()) >= 1, 5)
    (birth,) = status_docs(status.payloads()[:1])
    assert birth["state"] == "online" and birth["boot_id"] == "boot-uplink"
    assert birth["version"] and "outbox_depth" in birth
    retained = [r for _, _, r in status.messages]
    assert retained[0]  # a late subscriber gets the retained birth
    up.stop()
    assert status.wait_for(lambda: status_docs(status.payloads())[-1]["state"] == "offline", 5)


@pytest.mark.timeout(20)
def test_periodic_status_reports_outbox_depth(
    broker: Mosquitto, proxy: Proxy, outbox: Outbox, signer: BatchSigner, subscribe: MakeSub,
    make_uplink: MakeUplink,
) -> None:  # fmt: skip
    status = subscribe(broker.port, STATUS)
    make_uplink(proxy.port, status_interval_s=0.2)
    assert status.wait_for(lambda: len(status.payloads()) >= 1, 5)
    proxy.swallow_replies = True  # nothing gets acked from now on: the depth must show it
    append_batches(signer, outbox, 3)
    assert status.wait_for(lambda: status_docs(status.payloads())[-1].get("outbox_depth") == 3, 5)
    assert status.wait_for(lambda: len(status.payloads()) >= 4, 5)  # it keeps coming
    assert all(d["state"] == "online" for d in status_docs(status.payloads()))


@pytest.mark.timeout(20)
def test_commands_in_and_results_out(
    broker: Mosquitto, outbox: Outbox, subscribe: MakeSub, make_uplink: MakeUplink
) -> None:
    got: list[bytes] = []
    up = make_uplink(broker.port, start=False)
    up.on_command = got.append
    up.start()
    assert up.wait_drained(5) and up.alive
    results = subscribe(broker.port, "edge/gw-outbox-test/cmd/res")
    sender = subscribe(broker.port, "unused/topic")
    deadline = time.monotonic() + 5
    while not got and time.monotonic() < deadline:  # until the uplink's SUBSCRIBE is in place
        sender.client.publish("edge/gw-outbox-test/cmd", b"\xd2signed-command", qos=1)
        time.sleep(0.1)
    assert got and got[0] == b"\xd2signed-command"
    up.publish_result(b"result-1")
    assert results.wait_for(lambda: results.payloads() == [b"result-1"], 5)
