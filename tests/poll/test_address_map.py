"""Learned address maps (pure logic, an in-memory bus): a refused read is narrowed once, the plan
becomes the fewest requests the device accepts, unreadable points are tried again on the
quarantine schedule only, and a device that may have changed is learnt from scratch."""

from __future__ import annotations

import asyncio
import logging
import random
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.config.model import DeviceConfig
from edge_agent.platform.clock import ClockProbe
from edge_agent.poll.address_map import AddressMap, Lesson
from edge_agent.poll.device_poll import DevicePoller
from edge_agent.poll.health import PROBE_POLICY, PROBE_SHARE
from edge_agent.profiles.model import Profile, Reporting, Table
from edge_agent.readings import Quality, Reading
from tests.poll.fakes import FakeBus, accepted_optimum, profile

Address = tuple[Table, int]
MODBUS_PROFILES = ["water_meter", "manhole_cover", "street_lamp", "pole_environment",
                   "pipe_pressure"]


def refusing_bus(unit: int, refused: set[Address]) -> FakeBus:
    """A unit that answers exception 2 to any read touching a ``refused`` address."""
    bus = FakeBus("rs485", latency_s=0.0)
    bus.strict[unit] = {(t, a) for t in Table for a in range(400)} - refused
    return bus


def poller(prof: Profile, bus: FakeBus, unit: int, out: list[Reading],
           max_gap: int | None = 8) -> DevicePoller:
    dev = DeviceConfig(f"d{unit}", prof.name, "rs485", unit_id=unit, max_gap=max_gap,
                       interval_s=1.0)

    def emit(r: Reading, rep: Reporting) -> None:
        out.append(r)

    return DevicePoller(dev, prof, bus, 0.05, emit, ClockProbe(boot_id="b"), random.Random(5))


def refused_reads(bus: FakeBus, unit: int, refused: set[Address], since: int = 0) -> int:
    return sum(any((t, x) in refused for x in range(a, a + c))
               for t, a, c in bus.reads_of(unit)[since:])


async def cycles(dp: DevicePoller, n: int) -> None:
    for _ in range(n):
        for g in dp.plan.groups:
            await dp.run_group(g)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(MODBUS_PROFILES), st.data())
def test_after_learning_the_plan_is_the_optimum_for_the_accepted_map(
    name: str, data: st.DataObject,
) -> None:
    prof = profile(name)
    points = list(prof.modbus_points)
    tables = sorted({p.table for p in points})
    top = max(p.end for p in points) + 2
    refused = data.draw(st.sets(st.tuples(st.sampled_from(tables), st.integers(0, top)),
                                max_size=6), label="refused")
    out: list[Reading] = []
    bus = refusing_bus(3, refused)
    dp = poller(prof, bus, 3, out)
    per_cycle: list[int] = []
    refusals: list[int] = []

    async def main() -> None:
        for _ in range(len(refused) + 5):
            n = len(bus.reads_of(3))
            await cycles(dp, 1)
            per_cycle.append(len(bus.reads_of(3)) - n)
            refusals.append(refused_reads(bus, 3, refused, n))

    asyncio.run(main())
    best = accepted_optimum(points, refused, 8)
    # The first cycle narrows every refused read; each refusal after it proves one more break
    # (a refused address in a gap the first narrowing could not tell apart), so learning is
    # over within 1 + len(refused) cycles. Then: the optimum, never a refused read again.
    done = len(refused) + 1
    assert refusals[done:] == [0] * 4, (refusals, per_cycle)
    assert sum(refusals[1:]) <= len(refused), refusals
    assert per_cycle[done:] == [best] * 4, (per_cycle, best, dp.plan.requests)
    assert len(dp.plan.requests) == best
    last = {r.point: r for r in out}
    for p in points:
        readable = all((p.table, a) not in refused for a in range(p.address, p.end))
        q = last[p.name].quality
        assert q is not Quality.BAD, last[p.name]
        assert (q is not Quality.UNREADABLE) == readable, (p.name, last[p.name])
        if not readable:
            assert last[p.name].reason == "exc:2" and last[p.name].value is None
    assert dp.health.failures == 0


@pytest.mark.timeout(10)
def test_water_meter_refusing_its_serial_number_reads_in_one_request_per_table() -> None:
    """The field case: a unit answering exception 2 outside 0..12 (the serial number, 10..15,
    is not in its firmware) -- one narrowing, then input 0..6 and the coil, nothing else."""
    prof = profile("water_meter")
    refused = {(Table.INPUT, a) for a in range(13, 40)}
    bus = refusing_bus(4, refused)
    out: list[Reading] = []
    dp = poller(prof, bus, 4, out)
    asyncio.run(cycles(dp, 6))
    # input 0..15 refused, bisected at the largest gap: 0..6 read, the serial number refused
    assert bus.reads_of(4) == [(Table.COIL, 0, 1), (Table.INPUT, 0, 16), (Table.INPUT, 0, 7),
                               (Table.INPUT, 10, 6)] + [(Table.COIL, 0, 1), (Table.INPUT, 0, 7)] * 5
    assert refused_reads(bus, 4, refused) == 2
    assert {r.point for r in out if r.quality is Quality.UNREADABLE} == {"serial_number"}


@pytest.mark.timeout(10)
def test_unreadable_points_are_tried_on_the_quarantine_schedule_not_every_cycle() -> None:
    prof = profile("water_meter")
    refused = {(Table.INPUT, 4)}  # no battery register
    bus = refusing_bus(2, refused)
    out: list[Reading] = []
    dp = poller(prof, bus, 2, out)
    learnt = dp.plan.learnt
    t_end = time.monotonic() + 4.0

    async def main() -> None:
        while time.monotonic() < t_end:
            await cycles(dp, 1)
            await asyncio.sleep(0.01)

    asyncio.run(main())
    tries = [i for i, (t, a, c) in enumerate(bus.reads_of(2)) if (t, a, c) == (Table.INPUT, 4, 1)]
    n_cycles = bus.reads_of(2).count((Table.COIL, 0, 1))
    # learnt once, then tried again only at the backoff's pace (~1, 2, 4 s apart): 2-4 times in
    # 4 s against ~300 cycles
    assert n_cycles > 100
    assert 2 <= len(tries) <= 4, tries
    assert learnt.probes == len(tries) - 1 and learnt.unreadable == {"battery"}
    battery = [r for r in out if r.point == "battery"]
    assert {(r.quality, r.reason) for r in battery} == {(Quality.UNREADABLE, "exc:2")}
    assert len(battery) >= n_cycles  # one reading per cycle, without a transaction


def test_probe_schedule_walks_the_retry_policy_under_the_share_cap() -> None:
    pts = profile("water_meter").modbus_points
    m = AddressMap("d", random.Random(2))
    assert m.learn(Lesson(unreadable=[(pts[2],)]), now=10.0)
    first = m.next_probe_at - 10.0
    j = PROBE_POLICY.jitter
    assert PROBE_POLICY.initial_s * (1 - j) <= first <= PROBE_POLICY.initial_s * (1 + j)
    assert not m.probe_due(10.0 + first - 0.01) and m.probe_due(10.0 + first)
    gaps = []
    t = m.next_probe_at
    for _ in range(12):
        m.probed(t, cost_s=0.02)
        gaps.append(m.next_probe_at - t)
        t = m.next_probe_at
    for k, gap in enumerate(gaps, start=1):  # the policy's k-th delay, jittered, capped
        base = min(PROBE_POLICY.max_s, PROBE_POLICY.initial_s * PROBE_POLICY.factor**k)
        lo, hi = max(0.02 / PROBE_SHARE, base * (1 - j)), min(PROBE_POLICY.max_s, base * (1 + j))
        assert lo - 1e-9 <= gap <= hi + 1e-9, (k, gap, lo, hi)
    m.probed(t, cost_s=4.0)  # an expensive try (a timeout) is spaced to the share cap
    assert m.next_probe_at - t >= 4.0 / PROBE_SHARE
    assert not m.learn(Lesson(unreadable=[(pts[2],)]), now=t)  # nothing new
    assert m.forget("test") and not m.probe_due(1e9) and m.plan_breaks == set()
    assert not m.forget("test")


@pytest.mark.timeout(10)
def test_a_unit_that_accepts_a_refused_range_again_is_learnt_from_scratch(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    prof = profile("water_meter")
    refused = {(Table.INPUT, 12)}
    bus = refusing_bus(6, refused)
    out: list[Reading] = []
    dp = poller(prof, bus, 6, out)
    asyncio.run(cycles(dp, 2))
    assert dp.plan.learnt.unreadable == {"serial_number"}
    bus.strict.pop(6)  # new firmware: the full map
    dp.plan.learnt.next_probe_at = 0.0  # the retry is due (its pace is tested above)
    n = len(bus.reads_of(6))
    asyncio.run(cycles(dp, 3))
    # cycle 1: the learnt plan, then the serial number tried (the retry) and read: forgotten;
    # cycles 2 and 3: the profile's own plan
    coil, full = (Table.COIL, 0, 1), (Table.INPUT, 0, 16)
    assert bus.reads_of(6)[n:] == [coil, (Table.INPUT, 0, 7), (Table.INPUT, 10, 6),
                                   coil, full, coil, full]
    assert dp.plan.learnt.unreadable == frozenset() and dp.plan.learnt.forgotten == 1
    serial = [r for r in out if r.point == "serial_number"]
    assert serial[-1].quality is Quality.GOOD
    assert any("address_map_forgotten device=d6 why=reads_again:serial_number" in m
               for m in caplog.messages)


@pytest.mark.timeout(15)
def test_a_unit_back_from_quarantine_is_learnt_from_scratch() -> None:
    prof = profile("water_meter")
    refused = {(Table.INPUT, 14)}
    bus = refusing_bus(7, refused)
    out: list[Reading] = []
    dp = poller(prof, bus, 7, out)

    async def main() -> None:
        await cycles(dp, 2)
        assert dp.plan.learnt.unreadable == {"serial_number"}
        bus.dead.add(7)
        while not dp.health.quarantined:
            await cycles(dp, 1)
        assert dp.plan.learnt.unreadable == {"serial_number"}  # kept while it is away
        bus.dead.clear()
        dp.health.next_probe_at = 0.0  # the quarantine probe is due
        n = len(bus.reads_of(7))
        await cycles(dp, 3)
        reads = bus.reads_of(7)[n:]
        # probe (the smallest read), map forgotten, the profile's plan refused and narrowed again
        assert reads[:3] == [(Table.COIL, 0, 1), (Table.COIL, 0, 1), (Table.INPUT, 0, 16)]
        assert reads[-2:] == [(Table.COIL, 0, 1), (Table.INPUT, 0, 7)]

    asyncio.run(main())
    assert dp.plan.learnt.forgotten == 1 and dp.plan.learnt.unreadable == {"serial_number"}
    assert not dp.health.quarantined


def test_devices_of_one_profile_share_their_plans_until_one_learns() -> None:
    """Memory of a district: the devices of one profile hold the same group points and request
    lists (one SharedPlans per poller); a device whose map changes plans for itself alone, and
    shares again once it forgets."""
    from edge_agent.poll.device_plan import DevicePlan, SharedPlans
    from edge_agent.profiles.planner import plan

    prof = profile("street_lamp")
    shared = SharedPlans()
    a, b, c = (DevicePlan(DeviceConfig(n, prof.name, "rs485", unit_id=u), prof, shared=shared)
               for u, n in enumerate(("a", "b", "c"), 1))
    fixed = DevicePlan(DeviceConfig("f", prof.name, "rs485", unit_id=9, interval_s=60.0), prof,
                       shared=shared)
    assert len(fixed.groups) == 1 < len(a.groups)  # an interval override groups differently
    assert a.groups is b.groups is c.groups  # the groups themselves: one tuple for all three
    assert a.known is None and a.unreadable == frozenset() and not a.breaks  # no map made
    for ga, gb, gc in zip(a.groups, b.groups, c.groups, strict=True):
        assert ga.points is gb.points is gc.points
        assert ga.requests is gb.requests is gc.requests
        assert ga.requests == plan(ga.points, max_gap=a.max_gap)
    k, req = next((k, r) for k, g in enumerate(a.groups) for r in g.requests
                  if len(r.points) > 1)
    brk = (req.table, req.points[-1].address)
    before = list(b.groups[k].requests)
    a.learn(Lesson(breaks=[brk]), time.monotonic())
    assert a.groups[k].requests is not b.groups[k].requests
    assert a.known is not None and b.groups is c.groups and b.known is None
    assert len(a.groups[k].requests) > len(before)  # a reads around its break ...
    assert b.groups[k].requests == before and b.groups[k].requests is c.groups[k].requests
    a.forget("revived")  # ... until it forgets it: the profile's shared plan again
    assert a.groups[k].requests is b.groups[k].requests and a.groups is b.groups
