"""The EDF queue's tie-breakers stay small ints (no int object a queued job, issue #15 memory) and
the queue decides exactly as with one ever-growing counter (the reference model below)."""

from __future__ import annotations

import math
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.poll.edf import RENUMBER_MAX, SMALL_SEQ, EdfQueue, Job


class _Reference:
    """The queue as it was: one counter for ever, released jobs by (deadline, order queued)."""

    def __init__(self) -> None:
        self.n = 0
        self.pending: list[tuple[float, int, Job]] = []
        self.ready: list[tuple[float, int, Job]] = []

    def add(self, job: Job) -> None:
        self.pending.append((job.release, self.n, job))
        self.n += 1

    def pop(self, now: float) -> Job | None:
        due = [e for e in self.pending if e[0] <= now]
        self.pending = [e for e in self.pending if e[0] > now]
        self.ready += [(e[2].deadline, e[1], e[2]) for e in due]
        if not self.ready:
            return None
        best = min(self.ready, key=lambda e: (e[0], e[1]))
        self.ready.remove(best)
        return best[2]

    def next_release(self) -> float | None:
        if self.ready:
            return -math.inf
        return min(e[0] for e in self.pending) if self.pending else None


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 12), st.integers(0, 2**32))
def test_the_queue_decides_as_with_one_growing_counter(n_jobs: int, seed: int) -> None:
    """Random runs of 3,000 steps (the tie-breakers renumbered several times): releases and
    intervals from few values, so ties are many, in both heaps."""
    rnd = random.Random(seed)
    q, ref = EdfQueue(), _Reference()
    jobs = [Job(f"d{i}", interval_s=1.0 + i % 3, release=float(i % 4)) for i in range(n_jobs)]
    for j in jobs:
        q.add(j)
        ref.add(j)
    now = 0.0
    out: list[Job] = []  # popped, not queued again yet
    renumbered = 0
    for _ in range(3000):
        if rnd.random() < 0.5 or not out:
            now += rnd.randrange(3) / 2
            got = q.pop(now)
            assert got is ref.pop(now)
            if got is not None:
                out.append(got)
        else:  # a popped job back, released again (at a tie with others, often)
            job = out.pop(rnd.randrange(len(out)))
            job.release = math.floor(now) + rnd.choice([0.0, 1.0, 2.0])
            renumbered += q._seq == SMALL_SEQ
            q.add(job)
            ref.add(job)
        assert q.next_release() == ref.next_release()
        assert len(q) == len(ref.pending) + len(ref.ready)
        assert all(0 <= e[1] <= SMALL_SEQ for e in q._pending + (q._ready or []))
    assert renumbered >= 2


def test_a_districts_queue_holds_no_tie_breaker_object_after_thousands_of_runs() -> None:
    q = EdfQueue()
    a, b = Job("a", 60.0, 0.0), Job("b", 60.0, 30.0)
    q.add(a)
    q.add(b)
    t = 0.0
    for _ in range(5000):
        t += 30.0
        job = q.pop(t)
        assert job is not None
        job.complete(t)
        q.add(job, wake=False)
    assert {e[1] for e in q._pending} <= set(range(SMALL_SEQ + 1))
    assert q._seq <= SMALL_SEQ + 1


def test_a_long_queue_counts_on() -> None:
    q = EdfQueue()
    jobs = [Job(f"d{i}", 1.0, 0.0) for i in range(RENUMBER_MAX + 1)]
    for _ in range(3):
        for j in jobs:
            q.add(j)
    assert q._seq == 3 * len(jobs)
    order = [q.pop(0.0) for _ in range(len(q))]
    assert order == jobs * 3  # ties in the order queued, past SMALL_SEQ too
