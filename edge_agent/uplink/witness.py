"""The anti-rollback exchange with the broker: the retained chain witness (outbox/rechain.py).

At every connect, before anything is published, the session subscribes to the chain topic and
waits (bounded) for the retained witness; the guard then moves the local chain past it if this
state was rolled back. While publishing, a new witness (the outbox head) goes out, retained and
ahead of any batch above the last one announced, so the broker always stores a witness covering
what it has. A broker that refuses the subscription (an ACL) is named once, not per session.
"""

from __future__ import annotations

import logging
import threading
import time

from paho.mqtt.reasoncodes import ReasonCode

from edge_agent.errors import OutboxError
from edge_agent.outbox.rechain import ChainGuard
from edge_agent.uplink.acks import OutboxWrites
from edge_agent.uplink.session import OK, Session, pump

log = logging.getLogger("edge_agent.uplink.mqtt")  # its lines read as the uplink's

# the retained chain witness arrives right after the SUBACK; without one, publishing starts
# WITNESS_GRACE_S after the SUBACK, or WITNESS_WAIT_S after the CONNACK at the latest
WITNESS_GRACE_S = 1.0
WITNESS_WAIT_S = 5.0


class ChainWitness:
    def __init__(self, guard: ChainGuard, topic: str) -> None:
        self.guard = guard
        self.topic = topic
        self._refused = False

    def on_subscribe(self, sess: Session, mid: int, rcs: list[ReasonCode]) -> None:
        if mid == sess.witness_mid:
            sess.witness_subacked = time.monotonic()
            if any(rc.is_failure for rc in rcs) and not self._refused:
                self._refused = True  # once: a broker ACL, not a passing fault
                log.warning("chain_witness state=refused topic=%s (the broker refuses the "
                            "subscription: anti-rollback cannot read its witness)",
                            self.topic)  # fmt: skip

    def reconcile(
        self,
        sess: Session,
        wake_r: int,
        stop: threading.Event,
        writes: OutboxWrites,
    ) -> bool:
        """Before anything is published: read the retained chain witness (bounded wait) and let
        the guard move the chain past it if this state was rolled back. False: session broke."""
        client = sess.client
        sess.witness_mid = client.subscribe(self.topic, qos=1)[1] or -1
        deadline = time.monotonic() + WITNESS_WAIT_S
        while sess.witness is None and not (sess.lost or sess.failed or stop.is_set()):
            now = time.monotonic()
            if now >= deadline or 0 < sess.witness_subacked <= now - WITNESS_GRACE_S:
                break
            if pump(client, wake_r, 0.05) != OK:
                return False
        if sess.lost or sess.failed or stop.is_set():
            return False
        client.unsubscribe(self.topic)
        moves = len(self.guard.rechained)
        try:
            sess.announced = self.guard.reconcile(sess.witness)
        except OutboxError as exc:  # nothing is published until the chain is past the witness
            sess.failed = f"chain witness: {exc}"
            return False
        if len(self.guard.rechained) != moves:  # every waiting batch has a new seq now
            writes.unsaved.clear()
        return True

    def announce(self, sess: Session, seq: int) -> bool:
        """The chain witness (the outbox head) goes out, and is stored by the broker, before any
        batch it covers. False when the session broke."""
        if seq <= sess.announced:
            return True
        covered, witness = self.guard.witness()
        if sess.client.publish(self.topic, witness, qos=1, retain=True).rc != OK:
            sess.lost = True
            return False
        sess.announced = covered
        return True
