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

A worker whose next job is at least ``PARK_S`` away *parks*: its task ends. The parked workers of
a bus share one timer, armed for the queue's next release: when it fires it starts one of them (a
new task), which takes the due job; a worker that takes a job while others are parked re-arms the
timer for the next one, so jobs released together still run ``concurrency`` at a time, and a job
queued earlier than the timer (``EdfQueue.add``) re-arms it (at once if released). Workers
start parked. A district of a thousand devices at 60 s then holds no task, coroutine frame or
future per bus while it waits (1.2-1.4 MiB on that district) and pays one task start per job run;
workers of fast buses never park.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable

from edge_agent.errors import ContractError
from edge_agent.platform.timers import resolve, timers_for
from edge_agent.poll.edf import EdfQueue, Job
from edge_agent.poll.gate import Gate

__all__ = ["NETWORK_TICK_S", "PARK_S", "BusScheduler", "EdfQueue", "Job", "network_tick"]

log = logging.getLogger(__name__)

# a worker sleeping at least this long parks (its task ends; the scheduler's timer starts one
# parked worker per due job): see above. Well over a 1 s job's sleep (its interval plus at most a
# quarter-interval start grid, network_tick below): the busy loads never pay a task start per
# poll. On the district at 60 s a start costs ~10-25 µs, one per job run: parked or never
# parking, it idles under 1 % of a core (docs/benchmarks.md, "One timer per parked bus").
PARK_S = 5.0

# Network buses start their jobs on a common grid, so one loop wake-up starts the polls of many
# endpoints (a line's jobs keep their exact releases: its bus time is what is scarce there). The
# grid is as coarse as gives about JOBS_PER_TICK jobs a tick over all network buses, at most a
# quarter of a bus's shortest interval and NETWORK_TICK_MAX_S, at least NETWORK_TICK_S; ticks are
# 20 ms x a power of two, so the grids of different buses nest and their wake-ups coincide.
NETWORK_TICK_S = 0.02
NETWORK_TICK_MAX_S = 1.0
JOBS_PER_TICK = 16


def network_tick(jobs_per_s: float, shortest_interval_s: float) -> float:
    """The start grid of a network bus: see NETWORK_TICK_S above."""
    want = JOBS_PER_TICK / jobs_per_s if jobs_per_s > 0 else NETWORK_TICK_MAX_S
    want = min(want, shortest_interval_s / 4, NETWORK_TICK_MAX_S)
    tick = NETWORK_TICK_S
    while tick * 2 <= want:
        tick *= 2
    return tick


RunJob = Callable[[Job], Awaitable[None]]


class BusScheduler(EdfQueue):
    """Dispatches one bus's jobs EDF, at most ``concurrency`` at a time. It is its own queue
    of jobs (``queue``: itself)."""

    # five hundred buses of the district: no instance dict
    __slots__ = ("_clock", "_concurrency", "_crash", "_live", "_parked", "_run_job", "_running",
                 "_timer_at", "_timer_for", "_workers", "bus", "busy_s", "park_s", "restarts",
                 "slots", "tick_s")

    def __init__(
        self,
        bus: str,
        concurrency: int,
        run_job: RunJob,
        clock: Callable[[], float] = time.monotonic,
        tick_s: float = 0.0,
        park_s: float = PARK_S,
    ) -> None:
        self.bus = bus
        # > 0: an idle worker wakes on the next multiple of tick_s (of ``clock``) after the next
        # release, so the jobs of many buses start in one loop iteration (fewer epoll wake-ups);
        # the workers of one bus use grids shifted apart, so two of its jobs rarely start in one
        # iteration (their requests would leave in one segment: some servers read only the first)
        self.tick_s = tick_s
        self.park_s = park_s
        EdfQueue.__init__(self)
        self._concurrency = max(1, concurrency)
        self._workers = self._concurrency  # set by start(): at most one per job
        self.slots = Gate(self._concurrency)  # FIFO, as asyncio.Semaphore (poll.gate)
        self._run_job = run_job
        self._clock = clock
        self.busy_s = 0.0  # time spent inside jobs (summed over concurrent slots)
        # worker index -> its running task (None: no worker is a task)
        self._live: dict[int, asyncio.Task[None]] | None = None
        # parked workers (no task), a bit each (1 << index); the lowest is the next to start.
        # One wake-up per scheduler (not per parked worker) starts one of them at the queue's
        # next release: joined with the other buses' waking at the same instant (their start
        # grids coincide), one loop timer for them all (``Timers.join``)
        self._parked = 0
        self._timer_at: tuple[Callable[[], float], float] | None = None  # the joined instant
        self._timer_for = math.nan  # the release that wake-up starts a worker for
        self.restarts = 0  # parked workers started (a task each)
        self._crash: asyncio.Future[None] | None = None
        self._running = False

    def __bool__(self) -> bool:  # a scheduler, not the queue's length
        return True

    @property
    def queue(self) -> EdfQueue:
        """The bus's jobs (this scheduler)."""
        return self

    def _woken(self) -> None:
        if self._running:
            self._arm()

    def _wake_time(self, nxt: float, worker: int) -> float:
        """When ``worker`` wakes for a job released at ``nxt``: on its grid (see tick_s)."""
        if self.tick_s > 0:  # worker i on the grid shifted by i/workers ticks
            off = self.tick_s * worker / self._workers
            return math.ceil((nxt - off) / self.tick_s) * self.tick_s + off
        return nxt

    async def _next_job(self, worker: int = 0) -> Job | None:
        """The next released job, waiting for it; None when this worker parked instead (its
        task ends; the scheduler's timer starts a parked worker when a job is due)."""
        queue = self
        while True:
            now = self._clock()
            job = queue.pop(now)
            if job is not None:
                if self._parked:  # the next job is for a parked worker: arm its start
                    self._arm(spread=True)
                return job
            nxt = queue.next_release()
            queue.wake_at = math.inf if nxt is None else nxt
            if not queue.changed:
                wake = math.inf if nxt is None else self._wake_time(nxt, worker)
                if wake - now >= self.park_s and self._running:
                    live = self._live
                    if live is not None:
                        del live[worker]
                        if not live:
                            self._live = None
                    self._ready = None  # empty (pop found nothing released)
                    self._parked |= 1 << worker
                    self._arm(nxt)
                    return None
                loop = asyncio.get_running_loop()
                fut: asyncio.Future[None] = loop.create_future()
                timer = None
                if nxt is not None:
                    # one loop timer for every scheduler's sleeps (and the requests' timeouts)
                    timer = timers_for(loop).call_later(max(0.0, wake - now), resolve, fut)
                queue.waiters = (*queue.waiters, fut)
                try:
                    await fut
                finally:
                    queue.waiters = tuple(f for f in queue.waiters if f is not fut)
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
                log.exception("poll_job_failed bus=%s job=%s", self.bus, job.name)
            finally:
                finished = self._clock()
                self.busy_s += finished - started
                job.complete(finished)
                # this worker looks at the queue next: no need to wake the others for it
                self.add(job, wake=False)

    async def _worker(self, i: int) -> None:
        while True:
            job = await self._next_job(i)
            if job is None:  # parked
                return
            await self._execute(job)
            if not self._running:  # closed while its job ran, and the job dropped close()'s
                return  # cancellation: no further job, or close() would wait for ever
            if job.interval_s <= 0:  # always released: let the loop breathe between runs
                await asyncio.sleep(0)

    # -- workers' life cycle -----------------------------------------------------------------

    def _spawn(self, i: int) -> None:
        task = asyncio.get_running_loop().create_task(self._worker(i))
        live = self._live
        if live is None:
            live = self._live = {}
        live[i] = task
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            return
        if self._crash is not None and not self._crash.done():
            self._crash.set_exception(exc)  # a scheduler bug: surfaced by run() / the poller
        else:
            log.error("scheduler_worker_crashed bus=%s err=%r", self.bus, exc)

    @property
    def workers_running(self) -> int:
        """Workers that are tasks now (the others are parked)."""
        return len(self._live or ())

    def _arm(self, nxt: float | None = math.nan, *, spread: bool = False) -> None:
        """Set the scheduler's one timer to start the lowest parked worker at the queue's next
        release (``nxt``: that release, when the caller has it), on that worker's grid; a
        released job: at once, or with ``spread`` (a worker just took a job and left this one)
        at that worker's next grid point. No release (an empty queue): no timer, ``queue.add``
        calls this again (``_woken``)."""
        if nxt is not None and math.isnan(nxt):
            nxt = self.next_release()
        if nxt is not None and nxt == self._timer_for:
            return  # armed for that release already (for another parked worker: as good)
        at = self._timer_at
        if at is not None:
            self._timer_at = None
            timers_for().leave(at, self)
        self._timer_for = math.nan
        if nxt is None or not self._parked or not self._running:
            return
        # add() wakes the scheduler for a job queued before the next release
        self.wake_at = nxt
        parked = self._parked
        worker = (parked & -parked).bit_length() - 1  # the lowest parked: _unpark's
        now = self._clock()
        if nxt > now:
            wake = self._wake_time(nxt, worker)
        elif spread:  # a released job a worker that just started left: on the next worker's
            # grid, as a waiting worker would take it, so two workers of a bus never send in
            # one iteration: a server that parses one frame a read (pymodbus', many field
            # gateways) drops the second when both arrive before it reads
            wake = self._wake_time(now, worker)
        else:  # a job queued now (add): at once, as a waiting worker woken by add() takes it
            wake = now
        self._timer_for = nxt
        # a plain function and this scheduler as its argument (no bound method held a bus),
        # with every bus waking at that instant of this clock
        self._timer_at = timers_for().join((self._clock, wake), max(0.0, wake - now), _unpark,
                                           self)

    def _unpark(self) -> None:
        """The wake-up: start the lowest parked worker (a task; it takes the due job). It is
        the one ``_arm`` woke for: the parked set changes only with a new ``_arm``."""
        self._timer_at = None
        self._timer_for = math.nan
        parked = self._parked
        if self._running and parked:
            i = (parked & -parked).bit_length() - 1
            self._parked = parked & ~(1 << i)
            self.restarts += 1
            self._spawn(i)

    def start(self, crash: asyncio.Future[None] | None = None) -> None:
        """Start the workers (``concurrency`` of them, no more than the jobs queued now) in the
        running loop, parked: the first starts at the first release; an exception escaping a
        worker (a bug here, not a failing job) is set on ``crash``. ``close()`` stops them."""
        if self._running:
            raise ContractError(f"scheduler of {self.bus!r} already started")
        # no more workers than jobs: a job never runs twice at once, so an endpoint polling one
        # device needs one worker (a task and its frames) however many requests it allows
        self._workers = max(1, min(self._concurrency, len(self)))
        self._crash = crash
        self._running = True
        self._parked = (1 << self._workers) - 1  # all of them; worker 0 starts first
        self._arm()

    async def close(self) -> None:
        """Stop every worker (a running job is cancelled) and wait for them."""
        self._running = False
        self._arm(None)  # cancels the timer
        self._parked = 0
        tasks = list((self._live or {}).values())
        self._live = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def run(self) -> None:
        """Dispatch until cancelled (``start()``, then ``close()`` when cancelled); a running job
        is cancelled too. A worker's crash ends it with that exception.

        A worker takes the slot only once it holds a released job, so a write waiting for a slot
        (``slots`` is FIFO) goes before the next poll.
        """
        crash: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.start(crash)
        try:
            await crash
        finally:
            await self.close()


def _unpark(sched: BusScheduler) -> None:
    """The parked wake-up's callback (see ``BusScheduler._arm``)."""
    sched._unpark()
