"""Timers: many deadlines on one loop timer, in deadline order, never waking the loop for a
deadline that was cancelled."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from edge_agent.platform.timers import REARM_SLACK_S, Timers, timers_for


def _loop_timers(loop: asyncio.AbstractEventLoop) -> int:
    """Live asyncio timers of ``loop`` (what the selector's timeout is computed from)."""
    scheduled: list[Any] = loop._scheduled  # type: ignore[attr-defined]
    return sum(1 for h in scheduled if not h.cancelled())


@pytest.mark.timeout(10)
def test_callbacks_run_in_deadline_order_on_one_loop_timer() -> None:
    ran: list[int] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        t = timers_for(loop)
        assert timers_for(loop) is t  # one per loop
        now = loop.time()
        order = list(range(40))
        random.Random(3).shuffle(order)
        for k in order:
            t.call_at(now + 0.01 + k * 0.002, ran.append, k)
        assert len(t) == 40
        assert _loop_timers(loop) == 1
        await asyncio.sleep(0.2)
        assert len(t) == 0 and _loop_timers(loop) == 0

    asyncio.run(main())
    assert ran == list(range(40))


@pytest.mark.timeout(10)
def test_cancelling_the_earliest_re_arms_for_the_next_or_disarms() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        t = Timers(loop)
        fired: list[str] = []
        now = loop.time()
        a = t.call_at(now + 0.05, fired.append, "a")
        b = t.call_at(now + 5.0, fired.append, "b")
        assert t._armed == a.when
        a.cancel()
        a.cancel()  # idempotent
        assert t._armed == b.when and len(t) == 1  # the loop sleeps until b, not until a
        b.cancel()
        assert _loop_timers(loop) == 0 and len(t) == 0
        c = t.call_later(0.01, fired.append, "c")
        await asyncio.sleep(0.05)
        c.cancel()  # after it ran: nothing happens
        assert fired == ["c"] and len(t) == 0 and t._blanks == 0

    asyncio.run(main())


@pytest.mark.timeout(10)
def test_a_failing_callback_goes_to_the_loop_handler_and_the_rest_still_run() -> None:
    seen: list[Any] = []

    def boom() -> None:
        raise ValueError("bug")

    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, ctx: seen.append(ctx["exception"]))
        t = Timers(loop)
        out: list[str] = []
        now = loop.time()
        t.call_at(now + 0.01, boom)
        t.call_at(now + 0.01, out.append, "after")
        await asyncio.sleep(0.05)
        return out

    assert asyncio.run(main()) == ["after"]
    assert len(seen) == 1 and isinstance(seen[0], ValueError)


@pytest.mark.timeout(10)
def test_cancelled_deadlines_do_not_pile_up() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        t = Timers(loop)
        keep = t.call_later(60.0, lambda: None)
        now = loop.time()
        for i in range(5000):  # like answered requests' timeouts: almost all cancelled
            t.call_at(now + 100 + i * 1e-3, lambda: None).cancel()
        assert len(t) == 1 and len(t._heap) == 5001  # behind a live one: blanked, kept
        t.call_later(0.001, lambda: None)  # the next fire compacts
        await asyncio.sleep(0.02)
        assert len(t._heap) == 1 and len(t) == 1
        keep.cancel()
        t.close()

    asyncio.run(main())



@pytest.mark.timeout(10)
def test_each_loop_has_its_own_timers() -> None:
    async def get() -> Timers:
        t = timers_for()
        assert timers_for() is t and timers_for(asyncio.get_running_loop()) is t
        return t

    first = asyncio.run(get())
    second = asyncio.run(get())  # the last lookup's cache must not answer for another loop
    assert second is not first
    assert first._loop is not second._loop
    assert asyncio.run(get()) is not second


@pytest.mark.timeout(10)
def test_cancelling_the_earliest_keeps_the_loop_timer_for_a_deadline_right_after_it() -> None:
    """Answered requests cancel the earliest deadline all the time, and the next one follows it
    by µs: the loop timer stays (no handle swapped per request) unless the next deadline is
    more than REARM_SLACK_S later; a timer that fires early runs nothing before its time."""
    async def main() -> list[tuple[str, float]]:
        loop = asyncio.get_running_loop()
        t = Timers(loop)
        ran: list[tuple[str, float]] = []
        now = loop.time()
        a = t.call_at(now + 0.05, lambda: ran.append(("a", loop.time())))
        b = t.call_at(now + 0.05 + REARM_SLACK_S / 2,
                      lambda: ran.append(("b", loop.time())))
        c = t.call_at(now + 0.2, lambda: ran.append(("c", loop.time())))
        handle = t._handle
        a.cancel()
        assert t._armed == a.when and t._handle is handle  # b is right after a: kept
        await asyncio.sleep(0.1)
        assert [n for n, _ in ran] == ["b"] and ran[0][1] >= b.when - 1e-3
        assert t._armed == c.when and _loop_timers(loop) == 1
        d = t.call_at(c.when - 0.01, lambda: ran.append(("d", loop.time())))
        d.cancel()  # c is 10 ms after d: re-armed for c
        assert t._armed == c.when and _loop_timers(loop) == 1
        await asyncio.sleep(0.15)
        return ran

    ran = asyncio.run(main())
    assert [n for n, _ in ran] == ["b", "c"]


@pytest.mark.timeout(10)
def test_objects_joined_under_one_key_share_one_deadline_and_leave_it() -> None:
    """The parked schedulers of many buses waking at one instant of their start grid: one
    deadline for them all; the last one leaving cancels it; a failing callback does not keep
    the others asleep."""
    woken: list[str] = []
    errors: list[dict[str, Any]] = []

    def wake(obj: str) -> None:
        if obj == "bad":
            raise RuntimeError("bug")
        woken.append(obj)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx))
        t = Timers(loop)
        key = ("grid", 12.5)
        kept = t.join(key, 0.02, wake, "a")
        assert kept is key
        for obj in ("bad", "b", "c"):
            assert t.join(("grid", 12.5), 0.5, wake, obj) is key  # the kept key, not a copy
        t.leave(key, "c")
        t.leave(key, "nobody")  # not joined: nothing
        assert len(t) == 1  # one deadline for the instant
        other = t.join(("grid", 99.0), 0.03, wake, "x")
        t.leave(other, "x")  # the last one left: its deadline goes
        assert len(t) == 1
        await asyncio.sleep(0.1)
        assert len(t) == 0 and _loop_timers(loop) == 0
        t.leave(key, "a")  # after it fired: nothing

    asyncio.run(main())
    assert woken == ["a", "b"]
    assert [str(c["exception"]) for c in errors] == ["bug"]
