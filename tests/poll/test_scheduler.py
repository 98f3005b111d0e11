"""EDF ordering, missed-deadline counting and the per-bus dispatcher."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.poll.scheduler import BusScheduler, EdfQueue, Job


def test_released_job_with_earliest_deadline_runs_first() -> None:
    q = EdfQueue()
    slow = Job("a", interval_s=10.0, release=0.0, key="a")
    fast = Job("b", interval_s=1.0, release=0.5, key="b")
    later = Job("c", interval_s=0.1, release=5.0, key="c")
    for j in (slow, fast, later):
        q.add(j)
    assert q.pop(0.4) is slow  # only released job
    q.add(slow)
    assert q.pop(1.0) is fast  # deadline 1.5 < 10
    assert q.pop(1.0) is slow
    assert q.pop(1.0) is None and q.next_release() == 5.0


def test_missed_deadlines_are_counted_per_period() -> None:
    j = Job("a", interval_s=1.0, release=10.0)
    j.complete(10.2)
    assert (j.missed, j.release) == (0, 11.0)
    j.complete(12.5)  # deadline 12.0 missed; period [12, 13) is the current one
    assert (j.missed, j.release) == (1, 12.0)
    j.complete(15.1)  # deadlines 13, 14, 15 missed
    assert (j.missed, j.release) == (4, 15.0)


@given(st.floats(0.01, 100), st.lists(st.floats(0, 10), min_size=1, max_size=30))
def test_release_never_runs_ahead_and_misses_match_lateness(
    interval: float, durations: list[float]
) -> None:
    j = Job("a", interval_s=interval, release=0.0)
    t = 0.0
    for d in durations:
        start = max(t, j.release)
        finish = start + d
        before = j.release
        j.complete(finish)
        t = finish
        assert j.release <= max(finish, before + interval) + 1e-9
        assert j.release > finish - interval - 1e-9
    assert j.runs == len(durations)


@pytest.mark.timeout(10)
def test_dispatcher_serialises_and_interleaves_by_deadline() -> None:
    log: list[tuple[str, str]] = []
    active = 0
    peak = 0

    async def run_job(job: Job) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        log.append(("start", job.device))
        await asyncio.sleep(0.01)
        active -= 1

    async def main() -> BusScheduler:
        s = BusScheduler("line", 1, run_job)
        loop = asyncio.get_running_loop()
        now = loop.time()
        s.queue.add(Job("fast", 0.05, now, key="fast"))
        s.queue.add(Job("slow", 0.2, now, key="slow"))
        task = asyncio.create_task(s.run())
        await asyncio.sleep(0.45)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return s

    s = asyncio.run(main())
    fast = sum(1 for _, d in log if d == "fast")
    slow = sum(1 for _, d in log if d == "slow")
    assert peak == 1
    assert 7 <= fast <= 10 and 2 <= slow <= 4
    assert s.busy_s > 0.1


@pytest.mark.timeout(10)
def test_tcp_concurrency_limit_and_spread() -> None:
    active = 0
    peak = 0

    async def run_job(job: Job) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.02)
        active -= 1

    async def main() -> list[Job]:
        s = BusScheduler("tcp", 3, run_job)
        jobs = [Job(f"d{i}", 0.1, 0.0, key=f"d{i}") for i in range(12)]
        for j in jobs:
            s.queue.add(j)
        task = asyncio.create_task(s.run())
        await asyncio.sleep(0.3)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return jobs

    jobs = asyncio.run(main())
    assert peak == 3
    assert all(j.runs >= 1 for j in jobs)
    assert sum(j.missed for j in jobs) > 0  # 12 x 20 ms / 3 slots > 100 ms interval


def test_network_grid_gathers_jobs_into_few_wake_ups_but_stays_well_inside_the_interval() -> None:
    from edge_agent.poll.scheduler import NETWORK_TICK_MAX_S, NETWORK_TICK_S, network_tick

    assert network_tick(50, 1.0) == pytest.approx(0.16)  # 50 devices at 1 s: ~8 per wake-up
    assert network_tick(1000 / 60, 60.0) == pytest.approx(0.64)  # a district at 60 s
    assert network_tick(1000, 1.0) == NETWORK_TICK_S  # busy: the finest grid
    assert network_tick(4000, 0.05) == NETWORK_TICK_S  # never finer than 20 ms
    assert network_tick(0.01, 3600.0) <= NETWORK_TICK_MAX_S
    for rate in (1.0, 10.0, 100.0):
        for iv in (0.1, 0.5, 2.0, 30.0):
            tick = network_tick(rate, iv)
            assert tick <= max(NETWORK_TICK_S, iv / 4)
            ratio = tick / NETWORK_TICK_S  # a power of two: grids of different buses nest
            assert ratio == 2 ** round(ratio).bit_length() / 2


@pytest.mark.timeout(10)
def test_idle_workers_park_without_a_task_and_run_their_jobs_on_time() -> None:
    """A worker whose next job is >= park_s away ends its task; a timer restarts it at the
    release (the district's memory: no task, frame or future per waiting bus)."""
    starts: list[float] = []

    async def run_job(job: Job) -> None:
        starts.append(asyncio.get_running_loop().time() - job.release)
        await asyncio.sleep(0.005)

    async def main() -> tuple[list[int], list[Job]]:
        s = BusScheduler("tcp", 2, run_job, park_s=0.05)
        now = asyncio.get_running_loop().time()
        jobs = [Job("a", 0.3, now + 0.02, key="a"), Job("b", 0.3, now + 0.17, key="b")]
        for j in jobs:
            s.queue.add(j)
        s.start()
        running = []
        try:
            for _ in range(10):  # 1 s: about three periods of each job
                await asyncio.sleep(0.1)
                running.append(s.workers_running)
        finally:
            await s.close()
        assert s.workers_running == 0
        return running, jobs

    running, jobs = asyncio.run(main())
    assert all(j.runs >= 3 for j in jobs)
    assert sum(j.missed for j in jobs) == 0
    assert max(starts) < 0.05  # each job started within its timer's grain of its release
    assert running.count(0) >= 5  # mostly no worker task at all between the jobs


@pytest.mark.timeout(10)
def test_a_due_job_starts_one_parked_worker_and_the_parked_share_one_timer() -> None:
    """Parked workers hold no timer each: one per scheduler starts one of them per due job
    (the district's CPU: one task start per job run, not one per worker of the bus)."""
    from edge_agent.platform.timers import timers_for

    async def run_job(job: Job) -> None:
        await asyncio.sleep(0.002)

    async def main() -> tuple[BusScheduler, list[Job], list[int]]:
        loop = asyncio.get_running_loop()
        s = BusScheduler("tcp", 3, run_job, park_s=0.05)
        now = loop.time()
        jobs = [Job(k, 0.3, now + 0.02 + 0.1 * i, key=k) for i, k in enumerate("abc")]
        for j in jobs:
            s.queue.add(j)
        s.start()
        timers = []
        try:
            for _ in range(12):  # 1.2 s: four periods of each job
                await asyncio.sleep(0.1)
                if s.workers_running == 0:
                    timers.append(len(timers_for(loop)))
        finally:
            await s.close()
        return s, jobs, timers

    s, jobs, timers = asyncio.run(main())
    runs = sum(j.runs for j in jobs)
    assert runs >= 10 and sum(j.missed for j in jobs) == 0
    assert s.restarts <= runs + 1  # (every worker of the bus would be 3 per run)
    assert timers and set(timers) == {1}  # three workers parked, one timer


@pytest.mark.timeout(10)
@pytest.mark.parametrize("tick_s", [0.0, 0.08])
def test_jobs_released_together_on_a_parked_bus_run_concurrently(tick_s: float) -> None:
    """The worker a due job starts arms the start of the next parked one for the next released
    job: the bus's concurrency is kept while its workers park. On a start grid (network buses)
    that worker starts on its own shifted grid point, not in the next iteration: a Modbus TCP
    server that parses one frame a read drops the second request if both arrive before it reads."""
    spans: dict[str, list[tuple[float, float]]] = {}

    async def run_job(job: Job) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await asyncio.sleep(0.1)
        spans.setdefault(job.device, []).append((t0, loop.time()))

    async def main() -> None:
        s = BusScheduler("tcp", 2, run_job, park_s=0.05, tick_s=tick_s)
        now = asyncio.get_running_loop().time()
        for k in "ab":
            s.queue.add(Job(k, 0.5, now + 0.1, key=k))
        s.start()
        try:
            await asyncio.sleep(0.9)  # two periods (at 0.1 and 0.6 s; the next at 1.1)
            assert s.workers_running == 0
        finally:
            await s.close()

    asyncio.run(main())
    assert len(spans["a"]) == len(spans["b"]) == 2
    for (a0, a1), (b0, b1) in zip(spans["a"], spans["b"], strict=True):
        assert max(a0, b0) < min(a1, b1)  # overlapping: both slots used
        if tick_s:
            assert abs(a0 - b0) >= 0.03  # half a tick apart (0.04), not one iteration


@pytest.mark.timeout(10)
def test_a_job_queued_while_every_worker_is_parked_wakes_one() -> None:
    ran: list[str] = []

    async def run_job(job: Job) -> None:
        ran.append(job.device)

    async def main() -> None:
        s = BusScheduler("tcp", 1, run_job, park_s=0.05)
        now = asyncio.get_running_loop().time()
        s.queue.add(Job("far", 60.0, now + 30.0, key="far"))
        s.start()
        try:
            await asyncio.sleep(0.05)
            assert s.workers_running == 0  # parked until the far job (30 s away)
            s.queue.add(Job("now", 60.0, now, key="now"))
            await asyncio.sleep(0.05)
            assert ran == ["now"]
        finally:
            await s.close()

    asyncio.run(main())


@pytest.mark.timeout(10)
def test_fast_workers_never_park() -> None:
    async def run_job(job: Job) -> None:
        await asyncio.sleep(0.001)

    async def main() -> list[int]:
        s = BusScheduler("tcp", 1, run_job)  # default park_s (1 s) > the 20 ms interval
        s.queue.add(Job("fast", 0.02, asyncio.get_running_loop().time(), key="fast"))
        s.start()
        seen = []
        try:
            for _ in range(10):
                await asyncio.sleep(0.013)
                seen.append(s.workers_running)
        finally:
            await s.close()
        return seen

    assert asyncio.run(main()) == [1] * 10


@pytest.mark.timeout(10)
def test_a_crashing_worker_ends_run_with_its_exception(monkeypatch: pytest.MonkeyPatch) -> None:
    async def run_job(job: Job) -> None:
        pass

    async def main() -> None:
        s = BusScheduler("tcp", 1, run_job, park_s=0.05)
        s.queue.add(Job("a", 0.01, 0.0, key="a"))

        def broken(self: BusScheduler, now: float) -> Job | None:
            raise RuntimeError("scheduler bug")

        monkeypatch.setattr(BusScheduler, "pop", broken)  # (slots: not on the instance)
        await s.run()

    with pytest.raises(RuntimeError, match="scheduler bug"):
        asyncio.run(main())


def test_a_job_is_named_by_its_key_or_its_device_and_interval() -> None:
    assert Job("meter-3", 10.0, 0.0).name == "meter-3@10s"
    assert Job("lamp", 0.25, 0.0).name == "lamp@0.25s"
    assert Job("lamp", 1.0, 0.0, key="custom").name == "custom"


def test_starting_a_running_scheduler_is_a_contract_error() -> None:
    from edge_agent.errors import ContractError

    async def run_job(job: Job) -> None:
        pass

    async def main() -> None:
        s = BusScheduler("tcp", 1, run_job)
        s.start()
        try:
            with pytest.raises(ContractError, match="already started"):
                s.start()
        finally:
            await s.close()

    asyncio.run(main())


def test_workers_of_one_second_jobs_never_park() -> None:
    """A 1 s job's worker sleeps at most its interval plus its bus's start grid (a quarter of the
    shortest interval at most): parking there would cost a task start every poll."""
    from edge_agent.poll.scheduler import PARK_S, network_tick

    for jobs_per_s in (0.5, 50.0, 1000.0):
        assert 1.0 + network_tick(jobs_per_s, 1.0) < PARK_S
    assert 2.0 + network_tick(0.5, 2.0) < PARK_S  # nor those of 2 s jobs


def test_a_scheduler_holds_no_instance_dict_and_no_waiters_at_rest() -> None:
    """Memory of the district's five hundred buses (issue #15)."""

    async def run_job(job: Job) -> None:
        pass

    s = BusScheduler("tcp", 2, run_job)
    assert not hasattr(s, "__dict__") and s.queue.waiters == ()


@pytest.mark.timeout(20)
def test_close_ends_a_worker_whose_job_dropped_the_cancellation() -> None:
    """A job that drops close()'s cancellation (asyncio.wait_for on Python 3.11 did, when the
    answer came with the cancel) runs to its end, and its worker takes no further job: close()
    returns instead of waiting for a worker that polls on for ever (a reload that never ends)."""
    import time

    runs: list[int] = []
    dropped: list[int] = []

    async def main() -> None:
        started = asyncio.Event()

        async def run_job(job: Job) -> None:
            runs.append(job.runs)
            started.set()
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if dropped:  # only once: a second cancel ends it (the test's own teardown)
                    raise
                dropped.append(job.runs)

        sched = BusScheduler("line", 1, run_job)
        sched.queue.add(Job("meter", 0.01, time.monotonic()))
        sched.start()
        await asyncio.wait_for(started.wait(), 5)
        try:
            await asyncio.wait_for(sched.close(), 2)
        except TimeoutError:
            pytest.fail(f"close() did not return: the worker ran on (jobs run: {len(runs)})")
        assert dropped == [0] and runs == [0]

    asyncio.run(main())


@pytest.mark.timeout(10)
def test_a_parked_bus_holds_no_queue_object_task_table_nor_ready_heap() -> None:
    """Memory of the district's five hundred parked buses (issue #15): the scheduler is its own
    queue (no queue object, instance dict nor bound method for its wake-ups), and while every
    worker is parked it holds no task table and no list of released jobs."""

    async def run_job(job: Job) -> None:
        pass

    async def main() -> BusScheduler:
        s = BusScheduler("tcp", 2, run_job, park_s=0.05)
        now = asyncio.get_running_loop().time()
        for k in "ab":
            s.queue.add(Job(k, 60.0, now + 0.02, key=k))
        s.start()
        try:
            await asyncio.sleep(0.2)  # both ran once, both parked until their next release
            assert s.workers_running == 0 and len(s.queue) == 2
            assert (s._live, s._ready) == (None, None)
            assert bool(s)  # a scheduler, whatever its queue holds
        finally:
            await s.close()
        return s

    s = asyncio.run(main())
    assert s.queue is s and not hasattr(s, "__dict__")
    assert sum(j.runs for j in (e[2] for e in s._pending)) == 2
