"""The demo's backend: subscribes to the gateway's batches and verifies every one."""

from __future__ import annotations

import threading
from collections.abc import Mapping

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.readings import Value
from edge_agent.trust.batch import decode_payload
from edge_agent.trust.cose import parse1
from edge_agent.trust.ed25519 import PublicKey
from edge_agent.trust.verify import ChainVerifier, VerifyReport


class VerifyingConsumer:
    def __init__(self, port: int, keys: Mapping[bytes, PublicKey],
                 topic: str = "edge/+/data") -> None:
        self.verifier = ChainVerifier(keys)
        # (device, point) -> (value, unit, quality: "good" or e.g. "bad timeout")
        self.latest: dict[tuple[str, str], tuple[Value, str, str]] = {}
        self.received = 0
        self.status: dict[str, str] = {}
        self._lock = threading.Lock()
        self._topic = topic
        # a persistent session: the broker queues batches for us while we reconnect after an outage
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="demo-verifier",
                                   clean_session=False)
        self.subscribed = threading.Event()
        self._client.on_subscribe = lambda c, u, mid, rc, props: self.subscribed.set()
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._client.reconnect_delay_set(1, 2)
        self._client.connect_async("127.0.0.1", port)

    def start(self) -> None:
        self._client.loop_start()

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(self, c: mqtt.Client, u: object, flags: object, rc: object,
                    props: object) -> None:
        c.subscribe(self._topic, qos=1)
        c.subscribe("edge/+/status", qos=1)

    def _on_message(self, c: mqtt.Client, u: object, msg: mqtt.MQTTMessage) -> None:
        data = bytes(msg.payload)
        with self._lock:
            if msg.topic.endswith("/status"):
                self.status[msg.topic] = data.decode(errors="replace")
                return
            self.received += 1
            if self.verifier.feed(data, source=msg.topic) is None:
                return
            try:
                payload = decode_payload(parse1(data)[2])
            except Exception:  # verified above; a decode failure is already counted there
                return
            for r in getattr(payload, "readings", ()):
                quality = f"{r.quality} {r.reason}".strip()
                self.latest[(r.device, r.point)] = (r.value, r.unit, quality)

    def report(self) -> VerifyReport:
        with self._lock:
            return self.verifier.summary()

    def snapshot(self) -> dict[tuple[str, str], tuple[Value, str, str]]:
        with self._lock:
            return dict(self.latest)
