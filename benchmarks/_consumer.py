"""The verifying consumer of the end-to-end benchmarks: a paho subscriber (QoS 1) on a gateway's
data topic that checks every batch with ``ChainVerifier`` (signature, payload, hash chain) as it
arrives, and counts the readings it accepted."""

from __future__ import annotations

import threading
import time
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.trust.ed25519 import PublicKey
from edge_agent.trust.verify import ChainVerifier, VerifyReport


class VerifyingConsumer:
    def __init__(self, port: int, topic: str, public_key: PublicKey, kid: bytes) -> None:
        self.topic = topic
        self.verifier = ChainVerifier({kid: public_key}, window=1024)
        self._lock = threading.Lock()
        self.messages = 0
        self.readings = 0  # readings in accepted data batches (duplicates included)
        self.rejected = 0
        self.verify_cpu_s = 0.0  # thread CPU spent verifying
        self.first_at: float | None = None  # time.monotonic() of the first data batch
        self._subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-{id(self)}",
                                  clean_session=True)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda c, u, mid, rc, p: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            self.close()
            raise TimeoutError(f"consumer got no SUBACK for {topic}")

    def _on_connect(self, c: paho.Client, u: Any, f: Any, rc: Any, p: Any) -> None:
        c.subscribe(self.topic, qos=1)

    def _on_message(self, c: paho.Client, u: Any, msg: paho.MQTTMessage) -> None:
        t0 = time.thread_time()
        if self.first_at is None:
            self.first_at = time.monotonic()
        with self._lock:
            accepted = self.verifier.feed(bytes(msg.payload))
            self.messages += 1
            if accepted is None:
                self.rejected += 1
            elif accepted.payload.gap is None:
                self.readings += len(accepted.payload.readings)
            self.verify_cpu_s += time.thread_time() - t0

    def counts(self) -> tuple[int, int]:
        """(messages, readings) so far."""
        with self._lock:
            return self.messages, self.readings

    def wait_readings(self, at_least: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.counts()[1] >= at_least:
                return True
            time.sleep(0.05)
        return self.counts()[1] >= at_least

    def report(self) -> VerifyReport:
        with self._lock:
            return self.verifier.summary()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
