"""The jobs of one bus and their earliest-deadline-first queue (``poll.scheduler`` runs them).

A ``Job`` is one device's group of requests sharing an interval ``T``, released at ``release`` and
due by ``release + T``. ``EdfQueue`` holds the jobs waiting for their release (by release time)
and the released ones (by deadline); ties go in the order the jobs were queued.
"""

from __future__ import annotations

import asyncio
import heapq
import math
from dataclasses import dataclass

from edge_agent.platform.timers import resolve


@dataclass(eq=False, slots=True)
class Job:
    device: str
    interval_s: float
    release: float  # monotonic seconds
    key: str = ""  # a name for logs; "" (the poller's jobs): see ``name``
    missed: int = 0
    runs: int = 0

    @property
    def name(self) -> str:
        """``key``, else device@interval (e.g. "meter-3@10s")."""
        return self.key or f"{self.device}@{self.interval_s:g}s"

    @property
    def deadline(self) -> float:
        return self.release + self.interval_s

    def complete(self, finished_at: float) -> None:
        """Count missed deadlines and set the next release."""
        self.runs += 1
        t = self.interval_s
        if t <= 0:  # as fast as possible: no deadlines to miss
            self.release = finished_at
            return
        if finished_at <= self.deadline:
            self.release += t
            return
        periods = math.floor((finished_at - self.release) / t)
        self.missed += periods
        self.release += periods * t


# the heaps' tie-breaker counts per queue and is renumbered from 0 when it reaches this, so it stays
# a small int (CPython keeps one object for each of 0..256): no int object per queued job (32 bytes
# each, ~32 KiB on the 1,000-job district); a queue of more than RENUMBER_MAX jobs counts on
SMALL_SEQ = 256
RENUMBER_MAX = 128


class EdfQueue:
    """Jobs waiting for their release (by release time) and released ones (by deadline)."""

    # (a BusScheduler is its own queue: five hundred buses hold no queue object, instance dict
    # nor bound method each)
    __slots__ = ("_pending", "_ready", "_seq", "changed", "waiters", "wake_at")

    def __init__(self) -> None:
        self._pending: list[tuple[float, int, Job]] = []
        # the released jobs' heap: a list only while some are released (a parked bus has none)
        self._ready: list[tuple[float, int, Job]] | None = None
        self._seq = 0  # the next tie-breaker: ties go in the order the jobs were queued
        # set by add() when the workers must look again; waiting workers' futures are woken
        # (plain futures and one timer, no asyncio.timeout: it costs a cancellation per wake-up)
        self.changed = False
        # (a tuple, replaced: at most one future per worker, and the empty tuple is shared)
        self.waiters: tuple[asyncio.Future[None], ...] = ()
        self.wake_at = math.inf  # the release a waiting worker sleeps until

    def __len__(self) -> int:
        return len(self._pending) + len(self._ready or ())

    def add(self, job: Job, *, wake: bool = True) -> None:
        """Queue ``job`` for its release. ``wake=False``: the caller is a worker about to look
        at the queue itself (a job it just completed), so sleeping workers stay asleep."""
        seq = self._seq
        if seq == SMALL_SEQ:
            seq = self._renumber()
        self._seq = seq + 1
        heapq.heappush(self._pending, (job.release, seq, job))
        if wake and job.release < self.wake_at:  # earlier than the workers sleep until: wake
            self.changed = True
            for fut in self.waiters:
                resolve(fut)
            self._woken()

    def _renumber(self) -> int:
        """Number the queued jobs' tie-breakers 0, 1, ... in their order (each heap's order,
        hence its invariant, stays as it was); the next one. A long queue keeps its numbers (and
        counts on past SMALL_SEQ: never renumbered again)."""
        pending, ready = self._pending, self._ready or []
        if len(pending) + len(ready) > RENUMBER_MAX:
            return SMALL_SEQ
        rank = {seq: k for k, seq in enumerate(sorted(e[1] for h in (pending, ready) for e in h))}
        for heap in (pending, ready):
            heap[:] = [(key, rank[seq], job) for key, seq, job in heap]
        return len(rank)

    def _woken(self) -> None:
        """A job was queued earlier than the workers sleep until (the scheduler re-arms its
        parked timer)."""

    def pop(self, now: float) -> Job | None:
        """The released job with the earliest deadline, or None if none is released yet."""
        pending = self._pending
        if pending and pending[0][0] <= now:
            ready = self._ready
            if ready is None:
                ready = self._ready = []
            while pending and pending[0][0] <= now:
                _, seq, job = heapq.heappop(pending)
                heapq.heappush(ready, (job.deadline, seq, job))
        ready = self._ready
        if not ready:
            return None
        return heapq.heappop(ready)[2]

    def next_release(self) -> float | None:
        if self._ready:
            return -math.inf
        return self._pending[0][0] if self._pending else None

