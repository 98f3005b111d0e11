"""The uplink's data window: outbox batches on the wire in seq order, deleted on their PUBACK.

At most ``limit`` data batches are unacknowledged, always the lowest waiting seqs, published in
seq order, so the wire order equals the chain order. Before a batch past the outbox's
``held_through`` mark is published the mark is moved (acks.py), and the chain witness covering it
is announced first (witness.py). PUBACKed batches are deleted in groups (``ACK_GROUP`` of them, or
``ACK_DELAY_S`` after the first): one delete transaction per group cuts outbox page writes ~7x
against one per batch; a crash before the delete only means those batches are sent again
(at-least-once). A delete that cannot commit never ends the session (acks.py).
"""

from __future__ import annotations

import time

from edge_agent.outbox.store import Outbox
from edge_agent.uplink.acks import OutboxWrites
from edge_agent.uplink.session import OK, Session, UplinkStats
from edge_agent.uplink.witness import ChainWitness

ACK_GROUP = 64
ACK_DELAY_S = 0.25


class DataWindow:
    def __init__(
        self,
        outbox: Outbox,
        writes: OutboxWrites,
        stats: UplinkStats,
        *,
        topic: str,
        limit: int,
        witness: ChainWitness | None,
    ) -> None:
        self.outbox = outbox
        self.writes = writes
        self.stats = stats
        self.topic = topic
        self.limit = limit
        self.witness = witness

    def fill(self, sess: Session) -> None:
        """Publish the lowest waiting batches not yet sent in this session, up to the limit."""
        free = self.limit - len(sess.inflight)
        unsaved = self.writes.unsaved
        if free <= 0 or self.writes.full:
            return
        topic = self.topic
        for _ in range(2):  # read again once the held mark moved (see below)
            moved = False
            for b in self.outbox.pending(after_seq=sess.last_sent, limit=free + len(unsaved)):
                if b.seq in unsaved:  # acknowledged already, only its delete is pending
                    sess.last_sent = b.seq
                    continue
                if free <= 0:
                    return
                if b.seq > self.outbox.held_through:
                    if not self.writes.held(b.seq):
                        return
                    # what was read before the mark moved may have been dropped (and named in
                    # a gap notice) since: only what is read now is safe to publish
                    moved = True
                    break
                if self.witness is not None and not self.witness.announce(sess, b.seq):
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

    def wait_s(self, sess: Session, now: float) -> float | None:
        """Seconds until acks are due to be flushed (None: nothing waits)."""
        due = self.writes.due_in(now)
        if sess.acked:
            return ACK_DELAY_S if due is None else min(ACK_DELAY_S, due)
        return due

    def flush_due(self, sess: Session) -> bool:
        """A full ack group, an ack waiting ACK_DELAY_S, or a failed delete due for its retry."""
        return (
            len(sess.acked) >= ACK_GROUP
            or bool(sess.acked and time.monotonic() - sess.acked_since >= ACK_DELAY_S)
            or self.writes.due_in(time.monotonic()) == 0.0
        )

    def flush(self, sess: Session, *, force: bool = False) -> None:
        """Delete the PUBACKed batches (or keep them for a retry when the commit fails)."""
        acked, sess.acked = sess.acked, []
        self.stats.acked += len(acked)
        failures = self.writes.failures
        self.writes.ack(acked, force=force)
        self.stats.ack_pending = len(self.writes.unsaved)
        if self.writes.failures != failures:
            self.stats.ack_failures += self.writes.failures - failures
            self.stats.last_error = self.writes.last_error

