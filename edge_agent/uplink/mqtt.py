"""The MQTT uplink: forwards outbox batches with QoS 1 and deletes them only on their PUBACK.

One thread owns the session and drives paho-mqtt through its external-loop API (``loop_read``,
``loop_write``, ``loop_misc`` around our own ``select``: session.py), so publishing, PUBACK
handling and acks to the outbox all happen in that thread, in order. Each connection attempt uses
a fresh paho client with a clean session: batches that were in flight when a connection died are
simply sent again, in seq order, from the outbox (at-least-once; the chain lets the consumer drop
duplicates).

The window (window.py): at most ``uplink.inflight`` data batches unacknowledged, always the lowest
waiting seqs, published in seq order, so the wire order equals the chain order. A batch is deleted
from the outbox when paho reports ``on_publish`` for its mid (the PUBACK), never on ``publish()``.
Before a batch past the outbox's ``held_through`` mark is published the mark is moved, so the
outbox never drops what may have reached the broker and its gap notices name only batches the
broker never saw. An ack or a mark that cannot commit (disk full) never ends the session: see
``acks``. With a chain guard, the retained chain witness is read at connect and published ahead of
the batches it covers (witness.py).

Command results (``ResultSource``, the daemon's durable store) are published after every CONNACK
and whenever new ones arrive, and marked acknowledged only on their PUBACK: a result lost with a
connection is published again in the next session (at least once). Configuration bundles
(``on_config``) and rollout results (``config_results``) travel the same way on their own topics
(results.py); the retained status carries the daemon's ``inventory``.

Reconnects wait ``edge_agent.retry`` backoff delays (jittered, exponential, reset after a session
reached CONNACK). Birth status (retained, "online") after every CONNACK, the same periodically, a
retained "offline" last will (with the inventory known at connect: tags, config version), and an
explicit "offline" (with the inventory) on clean shutdown. After a lost rollout state the first
session reads the gateway's own retained status before it publishes one (``recover``). What comes
in (commands, bundles, that status) is inbound.py.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from edge_agent.config.model import UplinkConfig
from edge_agent.errors import OutboxError, UplinkError
from edge_agent.outbox.rechain import ChainGuard
from edge_agent.outbox.store import Outbox
from edge_agent.retry import Backoff, RetryPolicy
from edge_agent.uplink import session
from edge_agent.uplink.acks import OutboxWrites
from edge_agent.uplink.inbound import Inbound
from edge_agent.uplink.results import ResultSource, on_puback, publish_unacked
from edge_agent.uplink.session import OK, Session, UplinkStats
from edge_agent.uplink.tls import read_password, tls_context
from edge_agent.uplink.topics import Topics, status_payload
from edge_agent.uplink.window import DataWindow
from edge_agent.uplink.witness import ChainWitness

log = logging.getLogger(__name__)

RESULTS_KEPT = 100
STABLE_S = 5.0
_LOOPBACK = {"localhost", "127.0.0.1", "::1"}


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
        on_config: Callable[[bytes, bool], None] | None = None,
        config_results: ResultSource | None = None,
        inventory: Callable[[], Mapping[str, object]] | None = None,
        recover: Callable[[bytes | None], None] | None = None,
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
        self._witness = ChainWitness(guard, self.topics.chain) if guard is not None else None
        self.results = results  # durable command results, published until PUBACKed
        self.on_config = on_config  # configuration bundles (rollout): (payload, retained)
        self.config_results = config_results  # signed rollout results, until PUBACKed
        self.inventory = inventory  # extra keys of the retained status (read, never blocks)
        # the rollout state was lost: the first session reads this gateway's own retained status
        # (before publishing one) and hands it over once (None: there was none)
        self.recover = recover
        self._results: deque[bytes] = deque(maxlen=RESULTS_KEPT)
        self._ssl = tls_context(cfg.tls) if cfg.tls is not None else None
        self._password = read_password(cfg)
        if self._ssl is None and cfg.host not in _LOOPBACK:
            log.warning("uplink_plaintext host=%s port=%d (no [uplink.tls])", cfg.host, cfg.port)
        self.stats = UplinkStats()
        self.inbound = Inbound(self.topics, self.stats, self)
        self._stop = threading.Event()
        self._wake_lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._thread: threading.Thread | None = None
        self._writes = OutboxWrites(outbox)
        self._window = DataWindow(
            outbox, self._writes, self.stats,
            topic=self.topics.data, limit=cfg.inflight, witness=self._witness,
        )  # fmt: skip
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

    def _make_client(self) -> tuple[paho.Client, Session]:
        client = session.new_client(
            self.cfg, self.cfg.client_id or f"edge-{self.gateway_id}",
            will_topic=self.topics.status,
            # the will keeps what is known so far (config version, tags): an offline box stays
            # addressable by its tags and comparable by its version
            will=status_payload("offline", gateway_id=self.gateway_id, boot_id=self.boot_id,
                                inventory=self._inventory()),
            tls=self._ssl, password=self._password,
        )  # fmt: skip
        sess = Session(client)
        client.on_connect = lambda c, u, f, rc, p: self._on_connect(sess, rc)
        client.on_disconnect = lambda c, u, f, rc, p: self._on_disconnect(sess, rc)
        client.on_publish = lambda c, u, mid, rc, p: self._on_publish(sess, mid, rc)
        client.on_message = lambda c, u, msg: self.inbound.on_message(sess, msg)
        client.on_subscribe = lambda c, u, mid, rcs, p: self._on_subscribe(sess, mid, rcs)
        return client, sess

    def _on_connect(self, sess: Session, rc: ReasonCode) -> None:
        if rc.is_failure:
            sess.failed = f"connack {rc}"
        else:
            sess.connected = True

    def _on_disconnect(self, sess: Session, rc: ReasonCode) -> None:
        sess.lost = True
        if sess.connected and not self._stop.is_set():
            log.warning("uplink_disconnected host=%s rc=%s", self.cfg.host, rc)

    def _on_subscribe(self, sess: Session, mid: int, rcs: list[ReasonCode]) -> None:
        self.inbound.on_subscribe(sess, mid, rcs)
        if self._witness is not None:
            self._witness.on_subscribe(sess, mid, rcs)

    def _on_publish(self, sess: Session, mid: int, rc: ReasonCode) -> None:
        if mid == sess.offline_mid:
            sess.offline_acked = True
            return
        if on_puback(self.config_results, sess.config_inflight, mid, rc) or on_puback(
            self.results, sess.results_inflight, mid, rc
        ):
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
        self.inbound.subscribe(sess)
        log.info("uplink_connected host=%s port=%d tls=%s", cfg.host, cfg.port, bool(self._ssl))
        try:
            if self._witness is not None and not self._witness.reconcile(
                sess, self._wake_r, self._stop, self._writes
            ):
                return True
            self._serve(sess)
        finally:
            self._window.flush(sess)
            self._close(client)
        return True

    def _serve(self, sess: Session) -> None:
        client = sess.client
        self.inbound.recovered(sess)
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
                publish_unacked(sess.client, self.results, self.topics.command_result,
                                sess.results_sent, sess.results_inflight)  # fmt: skip
            if self.config_results is not None:
                publish_unacked(sess.client, self.config_results, self.topics.config_result,
                                sess.config_sent, sess.config_inflight)  # fmt: skip
            self._window.fill(sess)
            # sleep until something is due: the socket, the wake pipe (new batches, results,
            # stop), the status, an ack group or retry, or paho's keepalive check (a PINGREQ at
            # most a quarter keepalive late: well inside the broker's 1.5x); no fixed polling
            timeout = min(self._idle_s, max(0.0, next_status - now))
            acks_in = self._window.wait_s(sess, now)
            if acks_in is not None:
                timeout = min(timeout, acks_in)
            if self._pump(client, timeout) != OK:
                break
            if self._window.flush_due(sess):
                self._window.flush(sess)
        if sess.failed:
            self.stats.last_error = sess.failed
            log.error("uplink_session_failed err=%s", sess.failed)

    def _publish_status(self, sess: Session, state: str) -> int:
        try:
            st = self.outbox.stats()
        except OutboxError as exc:  # the status goes out anyway, without the outbox's figures
            log.debug("uplink_status_without_outbox err=%s", exc)
            payload = status_payload(state, gateway_id=self.gateway_id, boot_id=self.boot_id)
            return sess.client.publish(self.topics.status, payload, qos=1, retain=True).mid
        payload = status_payload(
            state, gateway_id=self.gateway_id, boot_id=self.boot_id,
            outbox_depth=st.depth, outbox_bytes=st.bytes, readings_dropped=st.readings_dropped,
            inventory=self._inventory(),
        )  # fmt: skip
        return sess.client.publish(self.topics.status, payload, qos=1, retain=True).mid

    def _inventory(self) -> Mapping[str, object] | None:
        if self.inventory is None:
            return None
        try:
            return self.inventory()
        except Exception as exc:  # the status goes out without it
            log.debug("uplink_status_without_inventory err=%r", exc)
            return None

    def _goodbye(self, sess: Session) -> None:
        """Clean shutdown: retained "offline" (PUBACKed or 2 s), then DISCONNECT."""
        sess.offline_mid = self._publish_status(sess, "offline")
        deadline = time.monotonic() + 2.0
        while not (sess.offline_acked or sess.lost) and time.monotonic() < deadline:
            if self._pump(sess.client, 0.05) != OK:
                return
        self._window.flush(sess, force=True)
        sess.client.disconnect()
        while sess.client.want_write() and time.monotonic() < deadline + 1.0:
            if self._pump(sess.client, 0.05) != OK:
                return

    def _close(self, client: paho.Client) -> None:
        session.close(client)

    def _pump(self, client: paho.Client, timeout: float) -> MQTTErrorCode:
        """One round of the external loop: select on the socket and the wake pipe."""
        return session.pump(client, self._wake_r, timeout)
