"""The uplink's writes to the outbox: deleting PUBACKed batches and moving the held mark.

Both are commits that can fail (disk full, I/O error). Neither failure may end the MQTT session:

- a PUBACKed seq whose delete cannot commit stays in ``unsaved`` (at most ACK_BACKLOG_MAX; the
  window stops filling beyond that) and the delete is retried with the one backoff policy. The
  broker has those batches, so they are not sent again in this process, and the outbox holds
  them (they are at or below its held mark), so they are never dropped or announced as lost;
- a batch past the outbox's ``held_through`` mark is published only after the mark moved past it
  (durably, HOLD_AHEAD seqs ahead: one fsync per HOLD_AHEAD batches). While the mark cannot move
  nothing new is published.

Used from the uplink thread only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from edge_agent.errors import OutboxError
from edge_agent.outbox.store import Outbox
from edge_agent.retry import Backoff, RetryPolicy

log = logging.getLogger(__name__)

ACK_BACKLOG_MAX = 4096  # PUBACKed seqs kept in memory while their delete cannot commit
STORE_RETRY = RetryPolicy(initial_s=0.25, max_s=2.0)
HOLD_AHEAD = 32  # seqs the held mark moves past the batch being published


class OutboxWrites:
    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self.unsaved: set[int] = set()  # PUBACKed, delete not committed
        self.failures = 0  # failed ack / hold commits
        self.last_error = ""
        self._backoff = Backoff(STORE_RETRY)
        self._retry_at = 0.0
        self._failing = False

    @property
    def full(self) -> bool:
        """Too many acks wait for their delete: publish nothing more until they commit."""
        return len(self.unsaved) >= ACK_BACKLOG_MAX

    def due_in(self, now: float) -> float | None:
        """Seconds until unsaved acks should be tried again (None: nothing waits)."""
        return max(0.0, self._retry_at - now) if self.unsaved else None

    def ack(self, seqs: Iterable[int], *, force: bool = False) -> None:
        """Take ``seqs`` (PUBACKed) and delete every unsaved one, unless a retry is not due."""
        self.unsaved.update(seqs)
        if not self.unsaved or (not force and time.monotonic() < self._retry_at):
            return
        try:
            self.outbox.ack(self.unsaved)
        except OutboxError as exc:
            self._failed("ack", exc)
            return
        self.unsaved.clear()
        self._ok()

    def held(self, seq: int) -> bool:
        """True once the outbox will never drop ``seq`` (it is about to reach the broker)."""
        if seq <= self.outbox.held_through:
            return True
        if time.monotonic() < self._retry_at:
            return False
        try:
            self.outbox.hold_through(seq + HOLD_AHEAD)
        except OutboxError as exc:
            self._failed("hold", exc)
            return False
        self._ok()
        return True

    def _failed(self, what: str, exc: OutboxError) -> None:
        self.failures += 1
        delay = self._backoff.next_delay()
        self._retry_at = time.monotonic() + delay
        self.last_error = f"{what}: {exc}"
        if not self._failing:
            self._failing = True
            log.error("uplink_outbox_commit_failed what=%s pending_acks=%d err=%s retry_s=%.1f",
                      what, len(self.unsaved), exc, delay)

    def _ok(self) -> None:
        self._backoff.reset()
        self._retry_at = 0.0
        if self._failing:
            self._failing = False
            log.info("uplink_outbox_commit_recovered")
