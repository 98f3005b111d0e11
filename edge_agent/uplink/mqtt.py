"""The MQTT uplink: forwards outbox batches with QoS 1 and deletes them only on their PUBACK.

One thread owns the session and drives paho-mqtt through its external-loop API (``loop_read``,
``loop_write``, ``loop_misc`` around our own ``select``), so publishing, PUBACK handling and acks to
the outbox all happen in that thread, in order. Each connection attempt uses a fresh paho client
with a clean session: batches that were in flight when a connection died are simply sent again,
in seq order, from the outbox (at-least-once; the chain lets the consumer drop duplicates).

The window: at most ``uplink.inflight`` data batches unacknowledged, always the lowest waiting
seqs, published in seq order, so the wire order equals the chain order. A batch is deleted from
the outbox when paho reports ``on_publish`` for its mid (the PUBACK), never on ``publish()``.
Before a batch past the outbox's ``held_through`` mark is published the mark is moved, so the
outbox never drops what may have reached the broker and its gap notices name only batches the
broker never saw. An ack or a mark that cannot commit (disk full) never ends the session: see
``acks``.

Command results (``ResultSource``, the daemon's durable store) are published after every CONNACK
and whenever new ones arrive, and marked acknowledged only on their PUBACK: a result lost with a
connection is published again in the next session (at least once). Configuration bundles
(``on_config``) and rollout results (``config_results``) travel the same way on their own topics;
the retained status carries the daemon's ``inventory``.

Reconnects wait ``edge_agent.retry`` backoff delays (jittered, exponential, reset after a session
reached CONNACK). Birth status (retained, "online") after every CONNACK, the same periodically, a
retained "offline" last will, and an explicit "offline" on clean shutdown.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from edge_agent.config.model import UplinkConfig
from edge_agent.errors import OutboxError, UplinkError
from edge_agent.outbox.rechain import ChainGuard
from edge_agent.outbox.store import Outbox
from edge_agent.retry import Backoff, RetryPolicy
from edge_agent.uplink.acks import OutboxWrites
from edge_agent.uplink.tls import read_password, tls_context
from edge_agent.uplink.topics import Topics, status_payload

log = logging.getLogger(__name__)

OK = MQTTErrorCode.MQTT_ERR_SUCCESS
# PUBACKed batches are deleted in groups (ACK_GROUP of them, or ACK_DELAY_S after the first):
# one delete transaction per group cuts outbox page writes ~7x against one per batch; a crash
# before the delete only means those batches are sent again (at-least-once).
ACK_GROUP = 64
ACK_DELAY_S = 0.25
RESULTS_KEPT = 100
STABLE_S = 5.0
# the retained chain witness arrives right after the SUBACK; without one, publishing starts
# WITNESS_GRACE_S after the SUBACK, or WITNESS_WAIT_S after the CONNACK at the latest
WITNESS_GRACE_S = 1.0
WITNESS_WAIT_S = 5.0
_LOOPBACK = {"localhost", "127.0.0.1", "::1"}


class ResultSource(Protocol):
    """Signed command results to publish until the broker acknowledged them (the daemon's
    commands/results.py store); both methods are thread-safe."""

    def unacked(self) -> list[tuple[int, bytes]]:
        """(key, payload) of every result not yet acknowledged, oldest first."""
        ...

    def acked(self, key: int) -> None:
        """The broker acknowledged result ``key`` (its PUBACK)."""
        ...


@dataclass
class _Session:
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
    ack_pending: int = 0  # PUBACKed, delete not committed yet (disk full, I/O error)
    ack_failures: int = 0  # failed delete commits (retried)
    last_error: str = ""


class MqttUplink:
    def __init__(
        self,
        cfg: UplinkConfig,
        gateway_id: str,
        outbox: Outbox,
        *,
        boot_id: str,
        retry: RetryPolicy | None = None,
        connect_timeout_s: float = 10.0,
        on_command: Callable[[bytes], None] | None = None,
        guard: ChainGuard | None = None,
        results: ResultSource | None = None,
        on_config: Callable[[bytes], None] | None = None,
        config_results: ResultSource | None = None,
        inventory: Callable[[], Mapping[str, object]] | None = None,
    ) -> None:
        """``on_command(payload)`` runs in the uplink thread for every message on the command
        topic (subscribed after every CONNACK when given); it must not block. With ``guard``
        (anti-rollback, outbox/rechain.py) every session first reads the retained chain witness
        and reconciles the outbox with it, and a new witness is published before any batch above
        the last one announced."""
        if cfg.protocol not in ("3.1.1", "5"):
            raise UplinkError(f"uplink.protocol must be '3.1.1' or '5', not {cfg.protocol!r}")
        if cfg.inflight < 1:
            raise UplinkError(f"uplink.inflight must be >= 1, not {cfg.inflight}")
        self.cfg = cfg
        self.gateway_id = gateway_id
        self.topics = Topics(cfg.topic_prefix, gateway_id)
        self.outbox = outbox
        self.boot_id = boot_id
        self.retry = retry or RetryPolicy()
        self.connect_timeout_s = connect_timeout_s
        self.on_command = on_command
        self.guard = guard
        self._witness_refused = False
        self.results = results  # durable command results, published until PUBACKed
        self.on_config = on_config  # configuration bundles (rollout), like on_command
        self.config_results = config_results  # signed rollout results, until PUBACKed
        self.inventory = inventory  # extra keys of the retained status (read, never blocks)
        self._results: deque[bytes] = deque(maxlen=RESULTS_KEPT)
        self._ssl = tls_context(cfg.tls) if cfg.tls is not None else None
        self._password = read_password(cfg)
        if self._ssl is None and cfg.host not in _LOOPBACK:
            log.warning("uplink_plaintext host=%s port=%d (no [uplink.tls])", cfg.host, cfg.port)
        self.stats = UplinkStats()
        self._stop = threading.Event()
        self._wake_lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._thread: threading.Thread | None = None
        self._writes = OutboxWrites(outbox)
        self._idle_s = cfg.keepalive_s / 4 if cfg.keepalive_s > 0 else 60.0
        outbox.add_listener(self.wake)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise UplinkError("uplink already started")
        self._thread = threading.Thread(target=self._run, name="uplink-mqtt", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Publish "offline", disconnect cleanly, stop the thread, release the wake pipe."""
        self._stop.set()
        self.wake()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise UplinkError("uplink thread did not stop")
            self._thread = None
        self.outbox.remove_listener(self.wake)
        with self._wake_lock:  # never write into a reused descriptor number
            for fd in (self._wake_r, self._wake_w):
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._wake_r = self._wake_w = -1

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def publish_result(self, payload: bytes) -> None:
        """Thread-safe: queue a command result for the result topic from memory only (QoS 1, sent
        while connected; the newest RESULTS_KEPT wait across a reconnect, none across a restart).
        For results the durable ``results`` source could not take."""
        self._results.append(payload)
        self.wake()

    def wake(self) -> None:
        """Something changed (new batches, stop): interrupt the session's select."""
        with self._wake_lock, contextlib.suppress(OSError):  # full pipe = already awake
            if self._wake_w >= 0:
                os.write(self._wake_w, b"\0")

    def wait_drained(self, timeout: float) -> bool:
        """True once the outbox is empty (everything PUBACKed) within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.outbox.stats().depth == 0:
                return True
            time.sleep(0.01)
        return self.outbox.stats().depth == 0

    # -- session ---------------------------------------------------------------------------

    def _run(self) -> None:
        backoff = Backoff(self.retry)
        while not self._stop.is_set():
            self.stats.attempts += 1
            reached = False
            t0 = time.monotonic()
            try:
                reached = self._session()
            except Exception as exc:  # the uplink thread must survive anything
                self.stats.last_error = repr(exc)
                log.exception("uplink_session_crash err=%r", exc)
            self.stats.connected = False
            # a session that was accepted and then stayed up resets the backoff; one dropped at
            # once (e.g. kicked by a duplicate client id) keeps backing off
            if reached and time.monotonic() - t0 >= STABLE_S:
                backoff.reset()
            if self._stop.is_set():
                break
            delay = backoff.next_delay()
            log.info("uplink_retry delay_s=%.2f attempt=%d", delay, backoff.attempt)
            self._stop.wait(delay)

    def _make_client(self) -> tuple[paho.Client, _Session]:
        v5 = self.cfg.protocol == "5"
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.cfg.client_id or f"edge-{self.gateway_id}",
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
            clean_session=None if v5 else True,
        )
        client.max_inflight_messages_set(self.cfg.inflight + 4)  # + status messages
        client.max_queued_messages_set(0)
        if self._ssl is not None:
            client.tls_set_context(self._ssl)
        if self.cfg.username is not None:
            client.username_pw_set(self.cfg.username, self._password)
        offline = status_payload("offline", gateway_id=self.gateway_id, boot_id=self.boot_id)
        client.will_set(self.topics.status, offline, qos=1, retain=True)
        sess = _Session(client)
        client.on_connect = lambda c, u, f, rc, p: self._on_connect(sess, rc)
        client.on_disconnect = lambda c, u, f, rc, p: self._on_disconnect(sess, rc)
        client.on_publish = lambda c, u, mid, rc, p: self._on_publish(sess, mid, rc)
        client.on_message = lambda c, u, msg: self._on_message(sess, msg)
        client.on_subscribe = lambda c, u, mid, rcs, p: self._on_subscribe(sess, mid, rcs)
        return client, sess

    def _on_connect(self, sess: _Session, rc: ReasonCode) -> None:
        if rc.is_failure:
            sess.failed = f"connack {rc}"
        else:
            sess.connected = True

    def _on_disconnect(self, sess: _Session, rc: ReasonCode) -> None:
        sess.lost = True
        if sess.connected and not self._stop.is_set():
            log.warning("uplink_disconnected host=%s rc=%s", self.cfg.host, rc)

    def _on_subscribe(self, sess: _Session, mid: int, rcs: list[ReasonCode]) -> None:
        if mid == sess.witness_mid:
            sess.witness_subacked = time.monotonic()
            if any(rc.is_failure for rc in rcs) and not self._witness_refused:
                self._witness_refused = True  # once: a broker ACL, not a passing fault
                log.warning("chain_witness state=refused topic=%s (the broker refuses the "
                            "subscription: anti-rollback cannot read its witness)",
                            self.topics.chain)  # fmt: skip

    def _on_message(self, sess: _Session, msg: paho.MQTTMessage) -> None:
        if msg.topic == self.topics.chain:
            if msg.retain and sess.witness is None:
                sess.witness = bytes(msg.payload)
            return
        if msg.topic == self.topics.config and self.on_config is not None:
            try:
                self.on_config(bytes(msg.payload))
            except Exception as exc:  # a bad handler must not kill the session
                log.error("uplink_config_handler_failed err=%r", exc)
            return
        if self.on_command is None or msg.topic != self.topics.command:
            return
        try:
            self.on_command(bytes(msg.payload))
        except Exception as exc:  # a bad handler must not kill the session
            log.error("uplink_command_handler_failed err=%r", exc)

    def _on_publish(self, sess: _Session, mid: int, rc: ReasonCode) -> None:
        if mid == sess.offline_mid:
            sess.offline_acked = True
            return
        key = sess.config_inflight.pop(mid, None)
        if key is not None:
            if self.config_results is not None and not rc.is_failure:
                self.config_results.acked(key)
            return
        key = sess.results_inflight.pop(mid, None)
        if key is not None:
            if self.results is not None and not rc.is_failure:  # refused: again next session
                self.results.acked(key)
            return
        seq = sess.inflight.pop(mid, None)
        if seq is None:
            return  # status message
        if rc.is_failure:  # MQTT 5 broker refused it: keep it, start over in a new session
            sess.failed = f"puback seq={seq} rc={rc}"
            return
        if not sess.acked:
            sess.acked_since = time.monotonic()
        sess.acked.append(seq)

    def _session(self) -> bool:
        client, sess = self._make_client()
        cfg = self.cfg
        try:
            client.connect(cfg.host, cfg.port, keepalive=cfg.keepalive_s)
        except (OSError, ValueError) as exc:  # ssl errors are OSErrors: never fall back
            self.stats.last_error = f"connect: {exc}"
            log.warning("uplink_connect_failed host=%s port=%d err=%s", cfg.host, cfg.port, exc)
            if self._ssl is not None:
                self._ssl.abandon()
            self._close(client)
            return False
        deadline = time.monotonic() + self.connect_timeout_s
        while not (sess.connected or sess.failed or sess.lost or self._stop.is_set()):
            if time.monotonic() > deadline:
                sess.failed = "no CONNACK"
                break
            if self._pump(client, 0.1) != OK:
                break
        if not sess.connected:
            err = sess.failed or "connection lost before CONNACK"
            self.stats.last_error = err
            log.warning("uplink_connect_refused host=%s port=%d err=%s", cfg.host, cfg.port, err)
            self._close(client)
            return False
        self.stats.sessions += 1
        self.stats.connected = True
        if self.on_command is not None:
            client.subscribe(self.topics.command, qos=1)
        if self.on_config is not None:
            client.subscribe(self.topics.config, qos=1)
        log.info("uplink_connected host=%s port=%d tls=%s", cfg.host, cfg.port, bool(self._ssl))
        try:
            if self.guard is not None and not self._reconcile_chain(sess, self.guard):
                return True
            self._serve(sess)
        finally:
            self._flush_acks(sess)
            self._close(client)
        return True

    def _reconcile_chain(self, sess: _Session, guard: ChainGuard) -> bool:
        """Before anything is published: read the retained chain witness (bounded wait) and let
        the guard move the chain past it if this state was rolled back. False: session broke."""
        client = sess.client
        sess.witness_mid = client.subscribe(self.topics.chain, qos=1)[1] or -1
        deadline = time.monotonic() + WITNESS_WAIT_S
        while sess.witness is None and not (sess.lost or sess.failed or self._stop.is_set()):
            now = time.monotonic()
            if now >= deadline or 0 < sess.witness_subacked <= now - WITNESS_GRACE_S:
                break
            if self._pump(client, 0.05) != OK:
                return False
        if sess.lost or sess.failed or self._stop.is_set():
            return False
        client.unsubscribe(self.topics.chain)
        moves = len(guard.rechained)
        try:
            sess.announced = guard.reconcile(sess.witness)
        except OutboxError as exc:  # nothing is published until the chain is past the witness
            sess.failed = f"chain witness: {exc}"
            return False
        if len(guard.rechained) != moves:  # every waiting batch has a new seq now
            self._writes.unsaved.clear()
        return True

    def _serve(self, sess: _Session) -> None:
        client = sess.client
        next_status = 0.0
        while not (sess.lost or sess.failed):
            if self._stop.is_set():
                self._goodbye(sess)
                return
            now = time.monotonic()
            if now >= next_status:
                self._publish_status(sess, "online")
                next_status = now + self.cfg.status_interval_s
            while self._results:
                sess.client.publish(self.topics.command_result, self._results.popleft(), qos=1)
            if self.results is not None:
                self._publish_results(sess)
            if self.config_results is not None:
                self._publish_config_results(sess)
            self._fill_window(sess)
            # sleep until something is due: the socket, the wake pipe (new batches, results,
            # stop), the status, an ack group or retry, or paho's keepalive check (a PINGREQ at
            # most a quarter keepalive late: well inside the broker's 1.5x); no fixed polling
            timeout = min(self._idle_s, max(0.0, next_status - now))
            if sess.acked:
                timeout = min(timeout, ACK_DELAY_S)
            due = self._writes.due_in(now)
            if due is not None:
                timeout = min(timeout, due)
            if self._pump(client, timeout) != OK:
                break
            if len(sess.acked) >= ACK_GROUP or (
                sess.acked and time.monotonic() - sess.acked_since >= ACK_DELAY_S
            ) or self._writes.due_in(time.monotonic()) == 0.0:
                self._flush_acks(sess)
        if sess.failed:
            self.stats.last_error = sess.failed
            log.error("uplink_session_failed err=%s", sess.failed)

    def _publish_results(self, sess: _Session) -> None:
        assert self.results is not None
        for key, payload in self.results.unacked():
            if key in sess.results_sent:
                continue
            info = sess.client.publish(self.topics.command_result, payload, qos=1)
            if info.rc != OK:
                return
            sess.results_sent.add(key)
            sess.results_inflight[info.mid] = key

    def _publish_config_results(self, sess: _Session) -> None:
        assert self.config_results is not None
        for key, payload in self.config_results.unacked():
            if key in sess.config_sent:
                continue
            info = sess.client.publish(self.topics.config_result, payload, qos=1)
            if info.rc != OK:
                return
            sess.config_sent.add(key)
            sess.config_inflight[info.mid] = key

    def _fill_window(self, sess: _Session) -> None:
        free = self.cfg.inflight - len(sess.inflight)
        unsaved = self._writes.unsaved
        if free <= 0 or self._writes.full:
            return
        topic = self.topics.data
        for _ in range(2):  # read again once the held mark moved (see below)
            moved = False
            for b in self.outbox.pending(after_seq=sess.last_sent, limit=free + len(unsaved)):
                if b.seq in unsaved:  # acknowledged already, only its delete is pending
                    sess.last_sent = b.seq
                    continue
                if free <= 0:
                    return
                if b.seq > self.outbox.held_through:
                    if not self._writes.held(b.seq):
                        return
                    # what was read before the mark moved may have been dropped (and named in
                    # a gap notice) since: only what is read now is safe to publish
                    moved = True
                    break
                if not self._announce(sess, b.seq):
                    return
                info = sess.client.publish(topic, b.cose, qos=1)
                if info.rc != OK:
                    sess.lost = True
                    return
                sess.inflight[info.mid] = b.seq
                sess.last_sent = b.seq
                self.stats.published += 1
                free -= 1
            if not moved:
                return

    def _announce(self, sess: _Session, seq: int) -> bool:
        """Anti-rollback: the chain witness (the outbox head) goes out, and is stored by the
        broker, before any batch it covers. False when the session broke."""
        if self.guard is None or seq <= sess.announced:
            return True
        covered, witness = self.guard.witness()
        if sess.client.publish(self.topics.chain, witness, qos=1, retain=True).rc != OK:
            sess.lost = True
            return False
        sess.announced = covered
        return True

    def _flush_acks(self, sess: _Session, *, force: bool = False) -> None:
        acked, sess.acked = sess.acked, []
        self.stats.acked += len(acked)
        failures = self._writes.failures
        self._writes.ack(acked, force=force)
        self.stats.ack_pending = len(self._writes.unsaved)
        if self._writes.failures != failures:
            self.stats.ack_failures += self._writes.failures - failures
            self.stats.last_error = self._writes.last_error

    def _publish_status(self, sess: _Session, state: str) -> int:
        try:
            st = self.outbox.stats()
        except OutboxError as exc:  # the status goes out anyway, without the outbox's figures
            log.debug("uplink_status_without_outbox err=%s", exc)
            payload = status_payload(state, gateway_id=self.gateway_id, boot_id=self.boot_id)
            return sess.client.publish(self.topics.status, payload, qos=1, retain=True).mid
        payload = status_payload(
            state, gateway_id=self.gateway_id, boot_id=self.boot_id,
            outbox_depth=st.depth, outbox_bytes=st.bytes, readings_dropped=st.readings_dropped,
            inventory=self.inventory() if self.inventory is not None and state == "online"
            else None,
        )  # fmt: skip
        return sess.client.publish(self.topics.status, payload, qos=1, retain=True).mid

    def _goodbye(self, sess: _Session) -> None:
        """Clean shutdown: retained "offline" (PUBACKed or 2 s), then DISCONNECT."""
        sess.offline_mid = self._publish_status(sess, "offline")
        deadline = time.monotonic() + 2.0
        while not (sess.offline_acked or sess.lost) and time.monotonic() < deadline:
            if self._pump(sess.client, 0.05) != OK:
                return
        self._flush_acks(sess, force=True)
        sess.client.disconnect()
        while sess.client.want_write() and time.monotonic() < deadline + 1.0:
            if self._pump(sess.client, 0.05) != OK:
                return

    def _close(self, client: paho.Client) -> None:
        sock: Any = client.socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    def _pump(self, client: paho.Client, timeout: float) -> MQTTErrorCode:
        """One round of the external loop: select on the socket and the wake pipe."""
        sock: Any = client.socket()
        if sock is None:
            return MQTTErrorCode.MQTT_ERR_NO_CONN
        want_w = client.want_write()
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            readable, writable = True, want_w
        else:
            try:
                r, w, _ = select.select([sock, self._wake_r], [sock] if want_w else [], [], timeout)
            except (OSError, ValueError):
                return MQTTErrorCode.MQTT_ERR_CONN_LOST
            readable, writable = sock in r, sock in w
            if self._wake_r in r:
                with contextlib.suppress(OSError):
                    os.read(self._wake_r, 4096)
        if readable:
            rc = client.loop_read()
            if rc != OK:
                return rc
        if writable or client.want_write():
            rc = client.loop_write()
            if rc != OK:
                return rc
        return client.loop_misc()
