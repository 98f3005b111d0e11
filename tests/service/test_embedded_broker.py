"""The embedded demo broker against a real MQTT client (paho): QoS 1, retained, wildcards, will."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.demo.broker import Broker, topic_matches


def test_topic_matching() -> None:
    assert topic_matches("edge/+/data", "edge/gw1/data")
    assert not topic_matches("edge/+/data", "edge/gw1/status")
    assert topic_matches("edge/#", "edge/gw1/cmd/res")
    assert not topic_matches("edge/gw1", "edge/gw1/data")


@pytest.fixture
def broker_port() -> Iterator[int]:
    loop = asyncio.new_event_loop()
    broker = Broker()
    port = loop.run_until_complete(broker.start())
    t = threading.Thread(target=loop.run_forever, name="test-broker")
    t.start()
    try:
        yield port
    finally:
        asyncio.run_coroutine_threadsafe(broker.stop(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        t.join(5)
        loop.close()


def _client(port: int, cid: str) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid)
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


@pytest.mark.timeout(20)
def test_publish_subscribe_retained_and_will(broker_port: int) -> None:
    got: list[tuple[str, bytes, bool]] = []
    acked: list[int] = []
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="pub")
    pub.will_set("edge/gw1/status", b"offline", qos=1, retain=True)
    pub.on_publish = lambda c, u, mid, rc, props: acked.append(mid)
    pub.connect("127.0.0.1", broker_port)
    pub.loop_start()
    sub = _client(broker_port, "sub")
    try:
        pub.publish("edge/gw1/status", b"online", qos=1, retain=True).wait_for_publish(5)
        sub.on_message = lambda c, u, m: got.append((m.topic, bytes(m.payload), bool(m.retain)))
        sub.subscribe("edge/+/#", qos=1)
        deadline = time.monotonic() + 5
        while not got and time.monotonic() < deadline:
            time.sleep(0.01)
        assert got[0] == ("edge/gw1/status", b"online", True)
        infos = [pub.publish("edge/gw1/data", bytes([i]), qos=1) for i in range(20)]
        for info in infos:
            info.wait_for_publish(5)
        assert sorted(acked) == sorted([*(i.mid for i in infos), acked[0]])
        while len(got) < 21 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [p for t, p, r in got[1:]] == [bytes([i]) for i in range(20)]
        # will on unclean disconnect
        pub._sock_close()  # simulate a dead connection: no DISCONNECT packet
        while got[-1][1] != b"offline" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert got[-1][:2] == ("edge/gw1/status", b"offline")
    finally:
        pub.loop_stop()
        pub.disconnect()
        sub.disconnect()
        sub.loop_stop()


@pytest.mark.timeout(30)
def test_persistent_session_survives_a_broker_restart() -> None:
    loop = asyncio.new_event_loop()
    broker = Broker()
    port = loop.run_until_complete(broker.start())
    t = threading.Thread(target=loop.run_forever, name="test-broker")
    t.start()
    got: list[bytes] = []
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="keeper", clean_session=False)
    sub.on_message = lambda c, u, m: got.append(bytes(m.payload))
    sub.reconnect_delay_set(1, 1)
    try:
        sub.connect("127.0.0.1", port)
        sub.subscribe("edge/+/data", qos=1)
        sub.loop_start()
        time.sleep(0.3)
        # outage: the broker stops (the subscriber drops), comes back, and a publisher sends
        # before the subscriber has reconnected: the session queues it
        asyncio.run_coroutine_threadsafe(broker.stop(), loop).result(5)
        asyncio.run_coroutine_threadsafe(broker.start(), loop).result(5)
        pub = _client(broker.port, "pub")
        for i in range(5):
            pub.publish("edge/gw/data", bytes([i]), qos=1).wait_for_publish(5)
        pub.disconnect()
        pub.loop_stop()
        deadline = time.monotonic() + 10
        while len(got) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert got == [bytes([i]) for i in range(5)]
    finally:
        sub.disconnect()
        sub.loop_stop()
        asyncio.run_coroutine_threadsafe(broker.stop(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        t.join(5)
        loop.close()
