"""Readings → closed batches → a ``commit`` callable (stage 3: knows nothing of signing or storage).

``Batcher.add`` is cheap and never blocks on disk, so the poll loop (asyncio) can call it directly.
A batch closes at ``batch.max_readings``, after ``batch.max_ms`` from its first reading, or at once
when an alarm reading arrives. One worker thread hands closed batches to ``commit``; when several
closed batches are waiting it hands them over together (up to ``max_group``), so the committer can
make them durable in a single transaction (group commit: one fsync for all). The daemon passes
``edge_agent.outbox.writer.SigningWriter``, which signs the group as one chain and appends it to
the outbox. A reading counts as accepted only after ``commit`` returned; ``flush`` waits for it.
If ``commit`` raises ``OutboxError`` (disk full, I/O error) the same group is handed over again
after the project's one backoff policy; nothing is silently discarded.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable

from edge_agent.config.model import BatchConfig
from edge_agent.errors import ContractError, OutboxError
from edge_agent.readings import Reading
from edge_agent.retry import Backoff, RetryPolicy

log = logging.getLogger(__name__)

# Takes a group of closed batches (oldest first) and makes them durable, all or nothing. Raising
# OutboxError means "not committed, retry the same readings after a backoff"; anything else is a
# bug and ends the worker (``alive`` turns False, which the daemon's watchdog sees).
Commit = Callable[[list[list[Reading]]], None]


class Batcher:
    def __init__(
        self,
        cfg: BatchConfig,
        commit: Commit,
        *,
        max_group: int = 32,
        retry: RetryPolicy | None = None,
    ) -> None:
        if cfg.max_readings < 1 or cfg.max_ms < 1:
            raise ContractError("batch.max_readings and batch.max_ms must be >= 1")
        self.cfg = cfg
        self._commit = commit
        self.max_group = max_group
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
            if self._stopping:
                raise OutboxError("batcher is closed")
            self._add_locked(reading)

    def add_many(self, readings: Iterable[Reading]) -> None:
        with self._cond:
            if self._stopping:
                raise OutboxError("batcher is closed")
            for r in readings:
                self._add_locked(r)

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

    def flush(self, timeout: float | None = None) -> bool:
        """Close the open batch and wait until every reading added so far is committed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._close_open_locked()
            target = self._enqueued
            while self._committed < target:
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
        if not done or lost:
            log.error("batcher_close_uncommitted readings=%d", lost)

    # -- worker ----------------------------------------------------------------------------

    def _take(self) -> list[list[Reading]] | None:
        with self._cond:
            while not self._closed:
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
            while self._closed and len(group) < self.max_group:
                group.append(self._closed.popleft())
            return group

    def _run(self) -> None:
        backoff = Backoff(self._retry)
        while True:
            group = self._take()
            if group is None:
                return
            while True:
                try:
                    self._commit(group)
                    backoff.reset()
                    break
                except OutboxError as exc:
                    delay = backoff.next_delay()
                    log.error(
                        "batch_commit_failed batches=%d err=%s retry_s=%.2f",
                        len(group), exc, delay,
                    )  # fmt: skip
                    if self._stop_now.wait(delay):
                        with self._cond:  # give the readings back so close() counts them
                            self._closed.extendleft(reversed(group))
                        return
            n = sum(len(b) for b in group)
            with self._cond:
                self._committed += n
                self._batches_committed += len(group)
                self._cond.notify_all()
