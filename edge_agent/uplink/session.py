"""One MQTT connection of the uplink: its paho client, its state, and the loop that drives it.

Every connection attempt gets a fresh paho client with a clean session (``new_client``: protocol,
window, TLS, login, the retained "offline" last will) and a fresh ``Session`` (what is in flight
by mid, what was PUBACKed and waits for its delete, the chain witness read at connect). paho runs
through its external-loop API: ``pump`` is one round of our own ``select`` over the socket and
the uplink's wake pipe, then ``loop_read`` / ``loop_write`` / ``loop_misc``, all in the uplink
thread. ``UplinkStats`` is what the uplink counts across sessions.
"""

from __future__ import annotations

import contextlib
import os
import select
import ssl
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion

from edge_agent.config.model import UplinkConfig

OK = MQTTErrorCode.MQTT_ERR_SUCCESS


@dataclass
class Session:
    client: paho.Client
    connected: bool = False
    failed: str = ""
    lost: bool = False
    last_sent: int = 0  # highest seq published in this session
    inflight: dict[int, int] = field(default_factory=dict)  # mid -> seq
    acked: list[int] = field(default_factory=list)  # PUBACKed, not yet deleted
    acked_since: float = 0.0
    offline_mid: int = -1
    offline_acked: bool = False
    announced: int = 0  # highest seq covered by a witness published (or read) in this session
    witness: bytes | None = None  # the retained chain witness read at connect
    witness_mid: int = -1
    witness_subacked: float = 0.0
    config_mid: int = -1  # the SUBSCRIBE to the config topic
    own_status: bytes | None = None  # this gateway's retained status, read at connect (recover)
    results_inflight: dict[int, int] = field(default_factory=dict)  # mid -> result key
    results_sent: set[int] = field(default_factory=set)  # result keys published this session
    config_inflight: dict[int, int] = field(default_factory=dict)  # mid -> rollout result key
    config_sent: set[int] = field(default_factory=set)


@dataclass
class UplinkStats:
    connected: bool = False
    sessions: int = 0  # sessions that reached CONNACK
    attempts: int = 0
    published: int = 0  # data batches handed to the socket (incl. resends)
    acked: int = 0  # data batches PUBACKed
    config_subscribed: bool | None = None  # the config topic's SUBACK: granted? (None: not yet)
    ack_pending: int = 0  # PUBACKed, delete not committed yet (disk full, I/O error)
    ack_failures: int = 0  # failed delete commits (retried)
    last_error: str = ""


def new_client(
    cfg: UplinkConfig,
    client_id: str,
    *,
    will_topic: str,
    will: bytes,
    tls: ssl.SSLContext | None,
    password: str | None,
) -> paho.Client:
    """A paho client for one connection attempt: clean session, the in-flight window (plus room
    for status messages), no queue of its own, TLS and login when configured, the last will."""
    v5 = cfg.protocol == "5"
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
        clean_session=None if v5 else True,
    )
    client.max_inflight_messages_set(cfg.inflight + 4)  # + status messages
    client.max_queued_messages_set(0)
    if tls is not None:
        client.tls_set_context(tls)
    if cfg.username is not None:
        client.username_pw_set(cfg.username, password)
    client.will_set(will_topic, will, qos=1, retain=True)
    return client


def close(client: paho.Client) -> None:
    sock: Any = client.socket()
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.close()


def pump(client: paho.Client, wake_r: int, timeout: float) -> MQTTErrorCode:
    """One round of the external loop: select on the socket and the wake pipe ``wake_r``."""
    sock: Any = client.socket()
    if sock is None:
        return MQTTErrorCode.MQTT_ERR_NO_CONN
    want_w = client.want_write()
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        readable, writable = True, want_w
    else:
        try:
            r, w, _ = select.select([sock, wake_r], [sock] if want_w else [], [], timeout)
        except (OSError, ValueError):
            return MQTTErrorCode.MQTT_ERR_CONN_LOST
        readable, writable = sock in r, sock in w
        if wake_r in r:
            with contextlib.suppress(OSError):
                os.read(wake_r, 4096)
    if readable:
        rc = client.loop_read()
        if rc != OK:
            return rc
    if writable or client.want_write():
        rc = client.loop_write()
        if rc != OK:
            return rc
    return client.loop_misc()
