"""The operator side of configuration rollout (paho-mqtt 2.x, QoS 1): read a bundle file, send it
to gateways, collect their signed results, read every gateway's retained status.

Used by ``edge-agent config send`` and ``edge-agent fleet status|rollout``; nothing here runs on
a gateway.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cbor2
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.cli.broker_login import PASSWORD_ENV, BrokerLogin, connack_failure
from edge_agent.cli.common import EXIT_NO_DAEMON, EXIT_USAGE, CliError
from edge_agent.errors import EdgeAgentError, KeyFileError, UplinkError, VerifyError
from edge_agent.rollout.bundle import describe_signed
from edge_agent.rollout.results import FINAL, RolloutResult, decode_result
from edge_agent.trust.cose import parse1, verify1
from edge_agent.trust.ed25519 import PublicKey
from edge_agent.trust.keys import kid_of, load_public_key


def parse_broker(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise CliError(f"--broker {text!r} is not HOST:PORT", "e.g. --broker "
                       "mqtt.city.example:8883", EXIT_USAGE, "bad_argument")
    return host or "127.0.0.1", int(port)


def gateway_keys(paths: Iterable[str]) -> dict[bytes, PublicKey]:
    """Gateway public keys to check results with; CliError naming a key that does not load."""
    keys = {}
    for p in paths:
        try:
            pub = load_public_key(Path(p))
        except KeyFileError as exc:
            raise CliError(str(exc), "give a gateway's public key (PEM; edge-agent keys show "
                           "--pem)", EXIT_USAGE, "bad_key") from None
        keys[kid_of(pub)] = pub
    return keys


class BrokerRefused(UplinkError):
    """The broker refused the login or a subscription (not authorised, bad password...)."""


def broker_failure(exc: UplinkError, broker: str) -> tuple[str, str, int, str]:
    """``CliError(*broker_failure(...))``: the broker did not take the tool's session."""
    if isinstance(exc, BrokerRefused):
        return (f"broker {broker}: {exc}", "log in with --username and --password-file (or $"
                f"{PASSWORD_ENV}), or --tls-cert/--tls-key; the broker's ACL must let this "
                "user read and write the gateways' topics", EXIT_NO_DAEMON, "not_authorised")
    return (f"broker {broker}: {exc}", "check HOST:PORT, the network, and --tls-ca for a TLS "
            "listener", EXIT_NO_DAEMON, "no_broker")


@dataclass(frozen=True, slots=True)
class Answer:
    result: RolloutResult
    verified: bool  # the signature held under a --gateway-key (False: none was given)
    forged: bool = False  # keys were given and its signature does not verify under any


def _good(answers: list[Answer]) -> list[Answer]:
    return [a for a in answers if not a.forged]


def read_result(payload: bytes, keys: Mapping[bytes, PublicKey]) -> Answer:
    """A rollout result; VerifyError when it is not one or its signature fails (with keys)."""
    if keys:
        _, body = verify1(payload, keys)
        return Answer(decode_result(body), True)
    return Answer(decode_result(parse1(payload)[2]), False)


def read_bundle(path: str) -> tuple[bytes, dict[str, Any]]:
    """A bundle file and its description; CliError when it cannot be read or is not one."""
    try:
        data = Path(path).read_bytes()
        return data, describe_signed(data)
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}", "", EXIT_USAGE,
                       "not_found") from None
    except EdgeAgentError as exc:
        raise CliError(f"{path} is not a configuration bundle ({exc})",
                       "make one with: edge-agent config sign", EXIT_USAGE, "malformed") from None


class OperatorClient:
    """One MQTT session of an operator tool: ``subscribe`` (waits for the SUBACK), ``publish``
    (waits for the PUBACK), every message received in ``messages``."""

    def __init__(self, broker: str, login: BrokerLogin | None = None, *,
                 timeout_s: float = 10.0) -> None:
        host, port = parse_broker(broker)
        self.timeout_s = timeout_s
        self.messages: queue.Queue[tuple[str, bytes, bool]] = queue.Queue()
        self._subacks: dict[int, threading.Event] = {}
        self._connected = threading.Event()
        self._refused = ""  # CONNACK's refusal, in words
        self._closed = ""  # closed before any CONNACK: why, as far as can be told
        self._sub_refused: dict[int, str] = {}
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=f"edge-agent-operator-{os.getpid()}-{id(self):x}")
        (login or BrokerLogin()).apply(self.client)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self._tls = (login or BrokerLogin()).tls
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = lambda c, u, m: self.messages.put(
            (m.topic, bytes(m.payload), bool(m.retain)))
        try:
            self.client.connect(host, port, keepalive=30)
        except (OSError, ValueError) as exc:  # ssl errors are OSErrors
            raise UplinkError(f"cannot connect to {host}:{port}: {exc}") from exc
        self.client.loop_start()
        if not self._connected.wait(timeout_s) or self._refused or self._closed:
            self.close()
            if self._refused:
                raise BrokerRefused(f"{host}:{port}: {self._refused}")
            if self._closed:
                raise UplinkError(f"{host}:{port}: {self._closed}")
            raise UplinkError(f"no CONNACK from {host}:{port} within {timeout_s:g} s")

    def _on_connect(self, c: mqtt.Client, u: Any, f: Any, rc: Any, p: Any) -> None:
        if rc.is_failure:
            self._refused = connack_failure(rc)
            c.disconnect()  # no reconnect with the same login
        self._connected.set()

    def _on_disconnect(self, c: mqtt.Client, u: Any, f: Any, rc: Any, p: Any) -> None:
        if self._connected.is_set():
            return
        # closed before any CONNACK: over TLS the broker refused the handshake's client
        # certificate (TLS 1.3 tells the client only then); else it dropped an unwanted client
        self._closed = ("the broker closed the connection before answering the login (a "
                         "listener requiring a client certificate: give --tls-cert/--tls-key "
                         "that its CA signed)" if self._tls else
                         "the broker closed the connection before answering the login (a TLS "
                         "listener? give --tls-ca)")
        c.disconnect()
        self._connected.set()

    def _on_subscribe(self, c: mqtt.Client, u: Any, mid: int, rcs: Any, p: Any) -> None:
        with self._lock:
            ev = self._subacks.setdefault(mid, threading.Event())
            bad = [rc for rc in rcs if rc.is_failure]
            if bad:
                self._sub_refused[mid] = str(bad[0])
        ev.set()

    def subscribe(self, topic: str) -> None:
        rc, mid = self.client.subscribe(topic, qos=1)
        with self._lock:  # the SUBACK may have come already: the callback made the event
            ev = self._subacks.setdefault(mid or -1, threading.Event())
        if rc != mqtt.MQTT_ERR_SUCCESS or not ev.wait(self.timeout_s):
            raise UplinkError(f"the broker did not confirm the subscription to {topic}")
        with self._lock:
            refused = self._sub_refused.pop(mid or -1, "")
        if refused:
            raise BrokerRefused(f"not authorised to subscribe to {topic} (SUBACK: {refused})")

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(self.timeout_s)
        if not info.is_published():
            raise UplinkError(f"the broker did not acknowledge the message to {topic}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> OperatorClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def statuses(client: OperatorClient, prefix: str, wait_s: float) -> dict[str, dict[str, Any]]:
    """Every gateway's retained status under ``prefix`` (what arrives within ``wait_s``), with
    ``witness_ms``: when its retained chain witness was made (a gateway publishes one with its
    batches, so it tells when an offline box was last heard of better than its last will)."""
    client.subscribe(f"{prefix}/+/status")
    client.subscribe(f"{prefix}/+/chain")
    out: dict[str, dict[str, Any]] = {}
    witnessed: dict[str, int] = {}
    deadline = time.monotonic() + wait_s
    while (left := deadline - time.monotonic()) > 0:
        try:
            topic, payload, _ = client.messages.get(timeout=left)
        except queue.Empty:
            break
        gw, _, leaf = topic[len(prefix) + 1:].rpartition("/")
        if leaf == "chain":
            witnessed[gw] = _witness_ms(payload)
            continue
        try:
            doc = json.loads(payload)
        except ValueError:
            continue
        if isinstance(doc, dict):
            out[gw] = doc
    for gw, ms in witnessed.items():
        if gw in out and ms:
            out[gw]["witness_ms"] = ms
    return out


def _witness_ms(payload: bytes) -> int:
    """A chain witness' creation time (ms), read without its signature (shown, never trusted
    for anything); 0 when it is not one."""
    try:
        m = cbor2.loads(parse1(payload)[2])
        ns = m.get(6) if isinstance(m, dict) else None
    except Exception:  # whatever is retained there, it is just not a witness
        return 0
    return ns // 1_000_000 if type(ns) is int and ns > 0 else 0


def await_results(client: OperatorClient, prefix: str, version: int, gateways: Iterable[str],
                  timeout_s: float, keys: Mapping[bytes, PublicKey],
                  progress: Any = None) -> dict[str, list[Answer]]:
    """Every result of ``version`` from each of ``gateways`` until each gave a final one (or
    ``timeout_s``); results failing their signature are kept, marked ``forged``, and never end
    the wait. ``progress(gw, answer)`` is called for each."""
    want = set(gateways)
    got: dict[str, list[Answer]] = {g: [] for g in want}
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0 and any(
            not _good(a) or _good(a)[-1].result.state not in FINAL for a in got.values()):
        try:
            topic, payload, _ = client.messages.get(timeout=min(left, 0.5))
        except queue.Empty:
            continue
        gw = topic[len(prefix) + 1:].rsplit("/config/res", 1)[0]
        if gw not in want or not topic.endswith("/config/res"):
            continue
        try:
            ans = read_result(payload, keys)
        except VerifyError:  # kept, marked: a result that claims to be one and fails its key
            try:
                ans = Answer(decode_result(parse1(payload)[2]), False, forged=True)
            except (VerifyError, EdgeAgentError):
                continue
        if ans.result.gateway != gw or ans.result.version != version:
            continue
        got[gw].append(ans)
        if progress is not None:
            progress(gw, ans)
    return got
