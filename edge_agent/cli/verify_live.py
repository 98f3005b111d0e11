"""``edge-agent verify --broker``: batches live from a broker, acknowledged only once recorded.

A persistent session (MQTT 5: session expiry, no clean start after the first connect of a run; an
archiver with ``--state`` never starts clean and keeps its client id in the state), a QoS 1
subscription, and manual acknowledgement: a message is PUBACKed only after the caller recorded it
(verifier state committed, ``--save`` files fsynced). So a broker restart, a lost connection or a
``kill -9`` of this process loses nothing: the broker redelivers whatever was not acknowledged.
The broker holds at most ``RECEIVE_MAX`` unacknowledged messages for us, which bounds memory.

A PUBACK names a packet id, valid only on the connection the message came in on: messages are
acknowledged only on that same connection (the broker redelivers the others after a reconnect).
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType
from typing import Any

from edge_agent.cli.broker_login import BrokerLogin, connack_failure
from edge_agent.errors import UplinkError
from edge_agent.retry import RetryPolicy

log = logging.getLogger(__name__)

RECEIVE_MAX = 256  # unacknowledged messages the broker may send us
GROUP_MAX = 256  # messages recorded (one commit, one fsync round) before they are acknowledged
SESSION_EXPIRY_S = 7 * 24 * 3600  # an archiver (--state) may be away this long
EPHEMERAL_EXPIRY_S = 3600  # a one-off run: survives broker restarts, dropped at a clean exit


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: bytes
    mid: int
    qos: int
    conn: int  # connection generation it arrived on


@dataclass(frozen=True, slots=True)
class BrokerOptions:
    host: str
    port: int
    topic: str
    client_id: str
    persistent: bool  # an archiver: resume the session across our own restarts
    session_expiry_s: int
    tls_ca: str | None = None
    protocol: str = "5"
    login: BrokerLogin | None = None  # TLS and credentials (cli/broker_login.py)


class BrokerSource:
    """Groups of messages from a broker; ``ack(group)`` once they are recorded."""

    def __init__(self, opts: BrokerOptions) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        self.opts = opts
        self._inbox: queue.Queue[Message] = queue.Queue()
        self._lock = threading.Lock()
        self._conn = 0
        self.connected = threading.Event()
        v5 = opts.protocol == "5"
        self._client = c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=opts.client_id,
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
            clean_session=None if v5 else not opts.persistent,
        )
        c.manual_ack_set(True)
        policy = RetryPolicy()
        c.reconnect_delay_set(min_delay=max(1, int(policy.initial_s)), max_delay=int(policy.max_s))
        if opts.login is not None:
            opts.login.apply(c)
        elif opts.tls_ca is not None:
            c.tls_set(ca_certs=opts.tls_ca)
        self.refused = ""  # the broker refused the login: no retry helps
        self._props: Any = None
        if v5:
            self._props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            self._props.SessionExpiryInterval = opts.session_expiry_s
            self._props.ReceiveMaximum = RECEIVE_MAX
        else:
            c.max_inflight_messages_set(RECEIVE_MAX)
        c.on_connect = self._on_connect
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message
        c.on_disconnect = self._on_disconnect

    def _on_connect(self, c: Any, _u: Any, flags: Any, rc: Any, _p: Any) -> None:
        if rc.is_failure:
            o = self.opts
            log.warning("mqtt_connect_failed broker=%s:%d rc=%s", o.host, o.port, rc)
            self.refused = connack_failure(rc)
            return
        with self._lock:
            self._conn += 1
        log.info("mqtt_connected broker=%s:%d client_id=%s session_present=%s", self.opts.host,
                 self.opts.port, self.opts.client_id, flags.session_present)  # fmt: skip
        c.subscribe(self.opts.topic, qos=1)

    def _on_subscribe(self, _c: Any, _u: Any, _mid: int, _rcs: Any, _p: Any) -> None:
        o = self.opts
        print(f"subscribed broker={o.host}:{o.port} topic={o.topic} client_id={o.client_id}",
              file=sys.stderr, flush=True)  # fmt: skip
        self.connected.set()

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        log.warning("mqtt_disconnected broker=%s:%d rc=%s", self.opts.host, self.opts.port, rc)

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        self._inbox.put(Message(msg.topic, bytes(msg.payload), msg.mid, msg.qos, self._conn))

    def start(self) -> None:
        from paho.mqtt.client import MQTT_CLEAN_START_FIRST_ONLY

        clean: Any = False if self.opts.persistent else MQTT_CLEAN_START_FIRST_ONLY
        kw: dict[str, Any] = {}
        if self.opts.protocol == "5":
            kw = {"clean_start": clean, "properties": self._props}
        if self.opts.persistent:  # an archiver waits for its broker (paho retries, backing off)
            self._client.connect_async(self.opts.host, self.opts.port, keepalive=30, **kw)
        else:
            try:
                self._client.connect(self.opts.host, self.opts.port, keepalive=30, **kw)
            except OSError as exc:
                raise UplinkError(f"--broker {self.opts.host}:{self.opts.port}: cannot connect:"
                                  f" {exc}") from None  # fmt: skip
        self._client.loop_start()

    def groups(self, stop: threading.Event, count: int | None, deadline: float | None,
               ) -> Iterator[list[Message]]:  # fmt: skip
        """Whatever arrived, up to GROUP_MAX at a time, until ``stop``, ``count`` messages or
        ``deadline`` (monotonic)."""
        received = 0
        while not stop.is_set() and (count is None or received < count):
            if self.refused:
                raise UplinkError(f"--broker {self.opts.host}:{self.opts.port}: "
                                  f"{self.refused}")
            timeout = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
            if timeout <= 0:
                return
            try:
                group = [self._inbox.get(timeout=timeout)]
            except queue.Empty:
                continue
            limit = GROUP_MAX if count is None else min(GROUP_MAX, count - received)
            while len(group) < limit:
                try:
                    group.append(self._inbox.get_nowait())
                except queue.Empty:
                    break
            received += len(group)
            yield group

    def ack(self, group: list[Message]) -> int:
        """PUBACK the messages that came in on the current connection; returns how many."""
        n = 0
        with self._lock:
            for m in group:
                if m.qos > 0 and m.conn == self._conn:
                    self._client.ack(m.mid, m.qos)
                    n += 1
        return n

    def close(self) -> None:
        """Disconnect; a one-off run (not persistent) also ends its session on the broker."""
        props = None
        if self.opts.protocol == "5" and not self.opts.persistent:
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            props = Properties(PacketTypes.DISCONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = 0
        self._client.disconnect(properties=props)
        self._client.loop_stop()


class StopSignals:
    """SIGTERM / SIGINT set ``event`` (a graceful stop: record, acknowledge, report)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._old: dict[int, Any] = {}

    def _handler(self, signum: int, _frame: FrameType | None) -> None:
        self.event.set()

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGTERM, signal.SIGINT):
                self._old[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)


def default_client_id() -> str:
    return f"edge-verify-{os.urandom(6).hex()}"
