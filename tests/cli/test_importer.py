"""`buffer import`: every batch of archives and directories reaches a real broker, acknowledged,
including across paho's message-id wrap at 65,535."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from edge_agent.cli import importer
from edge_agent.cli.importer import _Acks, import_batches
from edge_agent.errors import UplinkError
from edge_agent.trust.archive import ArchiveWriter, Header
from edge_agent.trust.batch import BatchSigner
from tests.support_broker import Mosquitto, Subscriber
from tests.trust.helpers import build_chain, fixed_key


def test_ack_tracking_survives_a_reused_message_id() -> None:
    acks = _Acks()
    acks.sent(65_535, "a")
    acks.on_publish(None, None, 65_535, None, None)  # type: ignore[arg-type]
    acks.on_publish(None, None, 1, None, None)  # type: ignore[arg-type]  # ack before sent()
    acks.sent(1, "b")
    assert acks.acked == 2 and not acks.inflight
    acks.sent(65_535, "c")  # the id comes round again: not "already acknowledged"
    with pytest.raises(UplinkError, match="first: c"):
        acks.wait_below(1, 0.2, "every batch")
    threading.Timer(0.1, acks.on_publish, (None, None, 65_535, None, None)).start()
    acks.wait_below(1, 5, "every batch")
    assert acks.acked == 3


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    b = Mosquitto(tmp_path / "broker")
    b.start()
    yield b
    b.stop()


def test_import_archive_and_directory_across_the_mid_wrap(
        tmp_path: Path, broker: Mosquitto, monkeypatch: pytest.MonkeyPatch) -> None:
    chain_a = build_chain(BatchSigner(fixed_key(1), "gw-a", "boot"), 250)
    buf = io.BytesIO()
    w = ArchiveWriter(buf, Header("gw-a", 250, "t", 1))
    for b in chain_a:
        w.add(b.cose, seq=b.seq)
    w.finish()
    archive = tmp_path / "gw-a.export.cbor"
    archive.write_bytes(buf.getvalue())
    chain_b = build_chain(BatchSigner(fixed_key(2), "gw-b", "boot"), 40)
    (tmp_path / "saved" / "gw-b").mkdir(parents=True)
    for b in chain_b:
        (tmp_path / "saved" / "gw-b" / f"{b.seq}.cose").write_bytes(b.cose)

    mids: list[int] = []
    real = importer.new_client

    def near_the_wrap() -> mqtt.Client:
        c = real()
        c._last_mid = 65_450  # 85 ids before the wrap
        publish = c.publish

        def spy(*a: Any, **k: Any) -> mqtt.MQTTMessageInfo:
            info = publish(*a, **k)
            mids.append(info.mid)
            return info

        c.publish = spy  # type: ignore[method-assign]
        return c

    monkeypatch.setattr(importer, "new_client", near_the_wrap)
    sub = Subscriber(broker.port, "edge/+/data")
    try:
        counts = import_batches([archive, tmp_path / "saved"], "127.0.0.1", broker.port)
        assert counts == {"gw-a": 250, "gw-b": 40}
        assert 65_535 in mids and mids.index(1) == mids.index(65_535) + 1  # it wrapped
        want = {b.cose for b in chain_a + chain_b}
        assert sub.wait_for(lambda: want <= set(sub.payloads()), 10)
        assert sub.payloads("edge/gw-a/data")[:3] == [b.cose for b in chain_a[:3]]
    finally:
        sub.close()


def test_damaged_archive_publishes_nothing(tmp_path: Path, broker: Mosquitto) -> None:
    chain = build_chain(BatchSigner(fixed_key(1), "gw-a", "boot"), 5)
    buf = io.BytesIO()
    w = ArchiveWriter(buf, Header("gw-a", 5, "t", 1))
    for b in chain:
        w.add(b.cose, seq=b.seq)
    archive = tmp_path / "cut.export.cbor"
    archive.write_bytes(buf.getvalue())  # no trailer: cut short
    sub = Subscriber(broker.port, "edge/+/data")
    try:
        with pytest.raises(Exception, match="cut short"):
            import_batches([archive], "127.0.0.1", broker.port)
        assert sub.payloads() == []
    finally:
        sub.close()
