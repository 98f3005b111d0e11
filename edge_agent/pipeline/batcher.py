"""Readings → closed batches → a ``commit`` callable (stage 3: knows nothing of signing or storage).

``Batcher.add`` is cheap and never blocks on disk, so the poll loop (asyncio) can call it directly.
A batch closes at ``batch.max_readings``, after ``batch.max_ms`` from its first reading, or at once
when an alarm reading arrives. One worker thread hands closed batches to ``commit``; when several
closed batches are waiting it hands them over together (up to ``max_group`` batches holding up to
``max_group_readings`` readings, at least one batch), so the committer can make them durable in a
single transaction (group commit: one fsync for all). The daemon passes
``edge_agent.outbox.writer.SigningWriter``, which signs the group as one chain and appends it to
the outbox. A reading counts as accepted only after ``commit`` returned; ``flush`` waits for it.
If ``commit`` raises ``OutboxError`` (disk full, I/O error) the same group is handed over again
after the project's one backoff policy.

Every queue is bounded: readings waiting (closed batches and the open one) never exceed
``max_backlog``. Past it the oldest closed batches (non-alarm first) are given up and summed up
(``loss.Tally``); before the next group the worker hands that summary to ``on_loss``, which signs
and commits a loss notice (nothing given up goes unannounced; with no ``on_loss`` it is logged).
``add`` raises OutboxError once the worker is dead, so a dead worker cannot make memory grow.
"""

from __future__ import annotations

import logging
import operator
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable

from edge_agent.config.model import BatchConfig
from edge_agent.errors import ContractError, OutboxError
from edge_agent.pipeline.loss import Loss, Tally
from edge_agent.readings import Reading
from edge_agent.retry import Backoff, RetryPolicy

log = logging.getLogger(__name__)

# Takes a group of closed batches (oldest first) and makes them durable, all or nothing. Raising
# OutboxError means "not committed, retry the same readings after a backoff"; anything else is a
# bug and ends the worker (``alive`` turns False, which the daemon's watchdog sees).
Commit = Callable[[list[list[Reading]]], None]
# Signs and commits a loss notice for readings given up; OutboxError means "retry later".
OnLoss = Callable[[Loss], None]
MAX_BACKLOG = 100_000  # readings waiting for their commit (about 30 MB of Reading objects)
# readings one group commit takes (one batch at least): the most a group held when batches had
# 200 readings, so the transaction (and what the outbox's reserve must cover) did not grow with
# the larger default batch
MAX_GROUP_READINGS = 6400
_ALARM = operator.attrgetter("alarm")  # (in C: a poll's readings are scanned for alarms)


class Batcher:
    def __init__(
        self,
        cfg: BatchConfig,
        commit: Commit,
        *,
        max_group: int = 32,
        max_group_readings: int = MAX_GROUP_READINGS,
        retry: RetryPolicy | None = None,
        max_backlog: int = MAX_BACKLOG,
        on_loss: OnLoss | None = None,
    ) -> None:
        if cfg.max_readings < 1 or cfg.max_ms < 1:
            raise ContractError("batch.max_readings and batch.max_ms must be >= 1")
        self.cfg = cfg
        self._commit = commit
        self.max_group = max_group
        self.max_group_readings = max_group_readings
        self.max_backlog = max(max_backlog, cfg.max_readings)
        self._on_loss = on_loss
        self._tally = Tally()
        self._queued = 0  # readings in closed batches not yet taken by the worker
        self._dropped = 0  # readings given up (they count as settled for flush)
        self._dead = False
        self._failing_since: float | None = None  # first failure of the current commit streak
        self.closed_clean = False  # set by ``close``: nothing it took was left unannounced
        self.last_error = ""  # of the current failure streak
        self._retry = retry or RetryPolicy(initial_s=0.1, max_s=5.0)
        self._cond = threading.Condition()
        self._open: list[Reading] = []
        self._deadline = 0.0
        self._closed: deque[list[Reading]] = deque()
        self._enqueued = 0  # readings handed to closed batches
        self._committed = 0  # readings committed durably
        self._batches_committed = 0
        self._stopping = False
        self._stop_now = threading.Event()
        self._thread = threading.Thread(target=self._run, name="batcher", daemon=True)
        self._thread.start()

    # -- producer side ---------------------------------------------------------------------

    def add(self, reading: Reading) -> None:
        with self._cond:
            self._check_locked()
            self._add_locked(reading)
            if self._queued > self.max_backlog:
                self._shed_locked()

    def add_many(self, readings: Iterable[Reading]) -> None:
        with self._cond:
            self._check_locked()
            cur = self._open
            if (isinstance(readings, list) and len(cur) + len(readings) < self.cfg.max_readings
                    and self._queued <= self.max_backlog
                    and not any(map(_ALARM, readings))):
                # the common case, a poll's readings that close no batch: one extend, as the
                # loop below would do reading by reading (nothing closes, nothing to shed)
                if readings and not cur:
                    self._deadline = time.monotonic() + self.cfg.max_ms / 1000.0
                    self._cond.notify()
                cur.extend(readings)
                return
            for r in readings:
                self._add_locked(r)
                if self._queued > self.max_backlog:
                    self._shed_locked()

    def _check_locked(self) -> None:
        if self._stopping:
            raise OutboxError("batcher is closed")
        if self._dead:
            raise OutboxError("batcher worker died: readings can no longer be committed")

    def _shed_locked(self) -> None:
        """Over the bound: give up the oldest closed batch (non-alarm first), for the notice."""
        victim = next((b for b in self._closed if not any(r.alarm for r in b)), self._closed[0])
        self._closed.remove(victim)
        self._queued -= len(victim)
        self._dropped += len(victim)
        if not self._tally:
            log.error("batcher_backlog_full max_backlog=%d (giving up the oldest readings, a "
                      "signed loss notice follows)", self.max_backlog)
        self._tally.add(victim)
        self._cond.notify_all()

    def _add_locked(self, reading: Reading) -> None:
        cur = self._open
        cur.append(reading)
        if len(cur) == 1:
            self._deadline = time.monotonic() + self.cfg.max_ms / 1000.0
            self._cond.notify()
        if reading.alarm or len(cur) >= self.cfg.max_readings:
            self._close_open_locked()

    def _close_open_locked(self) -> None:
        if self._open:
            self._closed.append(self._open)
            self._enqueued += len(self._open)
            self._queued += len(self._open)
            self._open = []
            self._cond.notify_all()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def committed_readings(self) -> int:
        return self._committed

    @property
    def committed_batches(self) -> int:
        return self._batches_committed

    @property
    def backlog(self) -> int:
        """Readings waiting for their commit (closed batches and the open one)."""
        return self._queued + len(self._open)

    @property
    def readings_lost(self) -> int:
        """Readings given up since start because the backlog was full (all announced or being)."""
        return self._tally.total

    @property
    def failing_s(self) -> float | None:
        """How long commits have been failing (None while they succeed)."""
        since = self._failing_since
        return None if since is None else time.monotonic() - since

    def flush(self, timeout: float | None = None) -> bool:
        """Close the open batch and wait until every reading added so far is committed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._close_open_locked()
            target = self._enqueued
            while self._committed + self._dropped < target:
                left = None if deadline is None else deadline - time.monotonic()
                if (left is not None and left <= 0) or not self._thread.is_alive():
                    return False
                self._cond.wait(left if left is not None else 1.0)
        return True

    def close(self, timeout: float = 30.0) -> None:
        """Flush, then stop the worker. Readings still uncommitted after ``timeout`` are lost
        (they were never accepted) and logged."""
        done = self.flush(timeout)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._stop_now.set()
        self._thread.join()  # a worker stuck in its retry loop gives its group back first
        with self._cond:
            lost = len(self._open) + sum(len(b) for b in self._closed)
            for b in (self._open, *self._closed):
                self._tally.add(b)
        if not done or lost:
            log.error("batcher_close_uncommitted readings=%d", lost)
        if self._tally:  # one last try to announce what was given up
            self._announce(give_up=True)
        with self._cond:
            self.closed_clean = not self._tally  # every reading committed or announced

    # -- worker ----------------------------------------------------------------------------

    def _take(self) -> list[list[Reading]] | None:
        with self._cond:
            while not self._closed and not self._tally:
                if self._stopping:
                    return None
                if self._open:
                    left = self._deadline - time.monotonic()
                    if left <= 0:
                        self._close_open_locked()
                        break
                    self._cond.wait(left)
                else:
                    self._cond.wait()
            group: list[list[Reading]] = []
            n = 0
            while self._closed and len(group) < self.max_group and n < self.max_group_readings:
                group.append(self._closed.popleft())
                n += len(group[-1])
            self._queued -= n
            return group

    def _run(self) -> None:
        try:
            self._work()
        except BaseException:  # a bug in commit: add() refuses from now on, the watchdog sees it
            log.exception("batcher_worker_died")
        finally:
            with self._cond:
                self._dead = not self._stopping
                self._cond.notify_all()

    def _work(self) -> None:
        backoff = Backoff(self._retry)
        while True:
            if self._tally and not self._announce(backoff=backoff):
                return
            group = self._take()
            if group is None:
                return
            if not group:  # woken for a loss notice only
                continue
            while True:
                try:
                    self._commit(group)
                    self._succeeded(backoff)
                    break
                except OutboxError as exc:
                    delay = self._failed(backoff)
                    self.last_error = str(exc)
                    log.error(
                        "batch_commit_failed batches=%d err=%s retry_s=%.2f",
                        len(group), exc, delay,
                    )  # fmt: skip
                    if self._stop_now.wait(delay):
                        with self._cond:  # give the readings back so close() counts them
                            self._closed.extendleft(reversed(group))
                            self._queued += sum(len(b) for b in group)
                        return
            n = sum(len(b) for b in group)
            with self._cond:
                self._committed += n
                self._batches_committed += len(group)
                self._cond.notify_all()

    def _announce(self, backoff: Backoff | None = None, *, give_up: bool = False) -> bool:
        """Hand the tally of given-up readings to ``on_loss`` until it commits. False when
        stopping interrupted the retries (the tally is kept)."""
        with self._cond:
            loss = self._tally.take()
        if self._on_loss is None:
            log.error("batcher_readings_lost readings=%d alarms=%d devices=%s (no loss notice "
                      "signer)", loss.readings, loss.alarms, ",".join(loss.devices))
            return True
        while True:
            try:
                self._on_loss(loss)
            except OutboxError as exc:
                delay = self._failed(backoff) if backoff is not None else 0.0
                log.error("loss_notice_commit_failed readings=%d err=%s", loss.readings, exc)
                if give_up or self._stop_now.wait(delay):
                    with self._cond:
                        self._tally.merge(loss)
                    return False
                continue
            if backoff is not None:
                self._succeeded(backoff)
            log.warning("batcher_loss_announced readings=%d alarms=%d devices=%d",
                        loss.readings, loss.alarms, len(loss.devices))
            return True

    def _failed(self, backoff: Backoff | None) -> float:
        if self._failing_since is None:
            self._failing_since = time.monotonic()
        return backoff.next_delay() if backoff is not None else 0.0

    def _succeeded(self, backoff: Backoff) -> None:
        backoff.reset()
        self._failing_since = None
