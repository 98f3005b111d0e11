"""Earliest-deadline-first scheduling of periodic poll jobs, one scheduler per bus.

A ``Job`` is one device's group of requests sharing an interval ``T``. It is *released* at ``r``
and should complete by its deadline ``r + T``. Among released jobs the one with the earliest
deadline runs next. First releases are spread uniformly over the interval (``phase``), so a thousand
devices never fire in the same millisecond. A job completing after its deadline counts the periods
it missed and is re-released in the period it finished in, so an overloaded or stalled bus
degrades into round-robin instead of bursting catch-up reads.

A bus runs at most ``concurrency`` jobs at once: 1 for a serial line (strictly one transaction at a
time), the endpoint's in-flight limit for TCP. ``slots`` is shared with the write path, so a write
waits for the running poll transaction and is then serialised with the polls.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from edge_agent.platform.timers import timers_for

log = logging.getLogger(__name__)


@dataclass(eq=False, slots=True)
class Job:
    device: str
    interval_s: float
    release: float  # monotonic seconds
    key: str = ""  # e.g. "meter-3@10.0s"
    missed: int = 0
    runs: int = 0

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


class EdfQueue:
    """Jobs waiting for their release (by release time) and released ones (by deadline)."""

    def __init__(self) -> None:
        self._pending: list[tuple[float, int, Job]] = []
        self._ready: list[tuple[float, int, Job]] = []
        self._seq = itertools.count()
        # set by add() when the workers must look again; waiting workers' futures are woken
        # (plain futures and one timer, no asyncio.timeout: it costs a cancellation per wake-up)
        self.changed = False
        self.waiters: set[asyncio.Future[None]] = set()
        self.wake_at = math.inf  # the release a waiting worker sleeps until

    def __len__(self) -> int:
        return len(self._pending) + len(self._ready)

    def add(self, job: Job, *, wake: bool = True) -> None:
        """Queue ``job`` for its release. ``wake=False``: the caller is a worker about to look
        at the queue itself (a job it just completed), so sleeping workers stay asleep."""
        heapq.heappush(self._pending, (job.release, next(self._seq), job))
        if wake and job.release < self.wake_at:  # earlier than the workers sleep until: wake
            self.changed = True
            for fut in self.waiters:
                _wake(fut)

    def pop(self, now: float) -> Job | None:
        """The released job with the earliest deadline, or None if none is released yet."""
        while self._pending and self._pending[0][0] <= now:
            _, seq, job = heapq.heappop(self._pending)
            heapq.heappush(self._ready, (job.deadline, seq, job))
        if not self._ready:
            return None
        return heapq.heappop(self._ready)[2]

    def next_release(self) -> float | None:
        if self._ready:
            return -math.inf
        return self._pending[0][0] if self._pending else None


RunJob = Callable[[Job], Awaitable[None]]


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class BusScheduler:
    """Dispatches one bus's jobs EDF, at most ``concurrency`` at a time."""

    def __init__(
        self,
        bus: str,
        concurrency: int,
        run_job: RunJob,
        clock: Callable[[], float] = time.monotonic,
        tick_s: float = 0.0,
    ) -> None:
        self.bus = bus
        # > 0: an idle worker wakes on the next multiple of tick_s (of ``clock``) after the next
        # release, so the jobs of many buses start in one loop iteration (fewer epoll wake-ups);
        # the workers of one bus use grids shifted apart, so two of its jobs rarely start in one
        # iteration (their requests would leave in one segment: some servers read only the first)
        self.tick_s = tick_s
        self.queue = EdfQueue()
        self._concurrency = max(1, concurrency)
        self._workers = self._concurrency  # set by run(): at most one per job
        self.slots = asyncio.Semaphore(self._concurrency)
        self._run_job = run_job
        self._clock = clock
        self.busy_s = 0.0  # time spent inside jobs (summed over concurrent slots)

    async def _next_job(self, worker: int = 0) -> Job:
        queue = self.queue
        while True:
            now = self._clock()
            job = queue.pop(now)
            if job is not None:
                return job
            nxt = queue.next_release()
            queue.wake_at = math.inf if nxt is None else nxt
            if not queue.changed:
                loop = asyncio.get_running_loop()
                fut: asyncio.Future[None] = loop.create_future()
                timer = None
                if nxt is not None:
                    wake = nxt
                    if self.tick_s > 0:  # worker i on the grid shifted by i/workers ticks
                        off = self.tick_s * worker / self._workers
                        wake = math.ceil((nxt - off) / self.tick_s) * self.tick_s + off
                    # one loop timer for every scheduler's sleeps (and the requests' timeouts)
                    timer = timers_for(loop).call_later(max(0.0, wake - now), _wake, fut)
                queue.waiters.add(fut)
                try:
                    await fut
                finally:
                    queue.waiters.discard(fut)
                    if timer is not None:
                        timer.cancel()
            queue.changed = False

    async def _execute(self, job: Job) -> None:
        async with self.slots:
            started = self._clock()
            try:
                await self._run_job(job)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("poll_job_failed bus=%s job=%s", self.bus, job.key)
            finally:
                finished = self._clock()
                self.busy_s += finished - started
                job.complete(finished)
                # this worker looks at the queue next: no need to wake the others for it
                self.queue.add(job, wake=False)

    async def _worker(self, i: int) -> None:
        while True:
            job = await self._next_job(i)
            await self._execute(job)
            if job.interval_s <= 0:  # always released: let the loop breathe between runs
                await asyncio.sleep(0)

    async def run(self) -> None:
        """Dispatch until cancelled, with ``concurrency`` workers (no more than the jobs queued
        when it starts); a running job is cancelled too.

        A worker takes the slot only once it holds a released job, so a write waiting for a slot
        (``slots`` is FIFO) goes before the next poll.
        """
        # no more workers than jobs: a job never runs twice at once, so an endpoint polling one
        # device needs one worker (a task and its frames) however many requests it allows
        self._workers = max(1, min(self._concurrency, len(self.queue)))
        workers = [asyncio.create_task(self._worker(i), name=f"bus:{self.bus}:{i}")
                   for i in range(self._workers)]
        try:
            await asyncio.gather(*workers)
        finally:
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
