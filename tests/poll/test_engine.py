"""The Poller against an in-memory bus: decoding, report filter, splits, quarantine, writes."""

from __future__ import annotations

import asyncio
import logging
import random
import struct
import time

import pytest

from edge_agent.config.model import DeviceConfig, SerialBus, TcpBus
from edge_agent.errors import BoundsError, BusTimeout, CodecError, CommandRefused
from edge_agent.platform.clock import ClockProbe
from edge_agent.platform.timers import timers_for
from edge_agent.poll.engine import Poller
from edge_agent.poll.scheduler import PARK_S, BusScheduler, Job
from edge_agent.profiles import codec
from edge_agent.profiles.model import ModbusPoint, Table
from edge_agent.readings import Quality, Reading
from tests.poll.fakes import FakeBus, make_config, profile


def clock() -> ClockProbe:
    return ClockProbe(synced=lambda: False, boot_id="boot-1")


async def run_for(poller: Poller, seconds: float) -> None:
    task = asyncio.create_task(poller.run())
    await asyncio.sleep(seconds)
    poller.stop()
    await asyncio.wait_for(task, 5)


def cdab32(value: int) -> list[int]:
    return [value & 0xFFFF, value >> 16]


@pytest.mark.timeout(10)
def test_water_meter_decoded_and_reported_by_exception() -> None:
    bus = FakeBus("rs485")
    total = 123_456
    flow = struct.unpack(">HH", struct.pack(">f", 2.5))
    for i, v in enumerate([*cdab32(total), flow[1], flow[0], 87, 0, 0b010]):
        bus.regs[(5, Table.INPUT, i)] = v
    wm = profile("water_meter")
    sn = wm.point("serial_number")
    assert isinstance(sn, ModbusPoint)
    for i, ch in enumerate(codec.encode(sn, "UWM-0000042")):
        bus.regs[(5, Table.INPUT, 10 + i)] = ch
    bus.regs[(5, Table.COIL, 0)] = 1
    dev = DeviceConfig("meter", "water_meter", "rs485", unit_id=5, interval_s=0.02)
    cfg = make_config([SerialBus("rs485", "/dev/null")], [dev], [wm])
    out: list[Reading] = []
    poller = Poller(cfg, {"rs485": bus}, out.append, clock=clock())

    async def main() -> None:
        task = asyncio.create_task(poller.run())
        await asyncio.sleep(0.3)
        bus.regs[(5, Table.INPUT, 6)] = 0b011  # tamper on
        bus.regs[(5, Table.INPUT, 0)] += 2  # +0.002 m3: beyond the 0.001 deadband
        await asyncio.sleep(0.2)
        poller.stop()
        await task

    asyncio.run(main())
    firsts: dict[str, Reading] = {}
    for r in out:
        firsts.setdefault(r.point, r)
    assert firsts["totalizer"].value == pytest.approx(123.456)
    assert firsts["totalizer"].unit == "m³"
    assert firsts["flow_rate"].value == pytest.approx(2.5)
    assert firsts["battery"].value == 87
    assert (firsts["tamper"].value, firsts["leak"].value, firsts["reverse_flow"].value) == (
        False, True, False)
    assert firsts["serial_number"].value == "UWM-0000042"
    assert firsts["valve"].value is True
    assert firsts["tamper"].alarm and not firsts["battery"].alarm
    assert all(r.quality is Quality.GOOD and not r.clock_synced for r in out)
    # ~25 polls, but only changes leave the poller
    assert bus.reads_of(5).count((Table.INPUT, 0, 16)) > 15
    tamper = [r.value for r in out if r.point == "tamper"]
    assert tamper == [False, True]
    assert [r.value for r in out if r.point == "totalizer"] == pytest.approx([123.456, 123.458])
    assert [r.value for r in out if r.point == "battery"] == [87]
    assert poller.readings_made > 10 * poller.readings_emitted
    st = poller.status()["meter"]
    assert st["failures"] == 0 and st["requests"] > 30 and st["last_good_ns"] is not None


@pytest.mark.timeout(10)
def test_refused_merged_read_is_narrowed_once_and_learnt() -> None:
    bus = FakeBus("rs485")
    mc = profile("manhole_cover")
    mapped = {(Table.INPUT, p.address) for p in mc.modbus_points}
    mapped.discard((Table.INPUT, 5))  # this unit lacks the h2s register altogether
    bus.strict[9] = mapped
    for a in (0, 1, 2, 3, 8):
        bus.regs[(9, Table.INPUT, a)] = 10 + a
    # the device config overrides max_gap = 0: the plan reads through unmapped registers
    dev = DeviceConfig("cover", "manhole_cover", "rs485", unit_id=9, max_gap=8, interval_s=0.03)
    cfg = make_config([SerialBus("rs485", "/dev/null")], [dev], [mc])
    out: list[Reading] = []
    poller = Poller(cfg, {"rs485": bus}, out.append, clock=clock())
    asyncio.run(run_for(poller, 0.4))  # shorter than the first re-probe of h2s (>= 0.8 s)
    reads = bus.reads_of(9)
    # the merged read, bisected: 0..5 refused, 0..3 read, h2s refused alone, 8 read -- once
    assert reads[:5] == [(Table.INPUT, 0, 9), (Table.INPUT, 0, 6), (Table.INPUT, 0, 4),
                         (Table.INPUT, 5, 1), (Table.INPUT, 8, 1)]
    # then only what the unit accepts, in the fewest requests: h2s is not read every cycle
    steady = reads[5:]
    assert len(steady) > 10 and set(steady) == {(Table.INPUT, 0, 4), (Table.INPUT, 8, 1)}
    by_point = {r.point: r for r in out}
    assert by_point["h2s"].quality is Quality.UNREADABLE and by_point["h2s"].reason == "exc:2"
    assert by_point["h2s"].value is None
    assert by_point["tilt_angle"].value == pytest.approx(1.0)
    assert by_point["ch4"].value == pytest.approx(1.3) and by_point["battery"].value == 18
    assert all(r.quality is Quality.GOOD for r in out if r.point != "h2s")
    assert [r.quality for r in out if r.point == "h2s"] == [Quality.UNREADABLE]  # filtered
    assert poller.readings_made > 10 * poller.readings_emitted
    st = poller.status()["cover"]
    assert st["unreadable"] == 1 and st["breaks"] == 0
    assert st["failures"] == 0 and not st["quarantined"]


@pytest.mark.timeout(15)
def test_dead_unit_is_quarantined_probed_and_recovers(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    bus = FakeBus("rs485", latency_s=0.005)
    devs = [DeviceConfig(f"m{u}", "water_meter", "rs485", unit_id=u, interval_s=0.05)
            for u in (1, 2, 3)]
    bus.dead.add(2)
    cfg = make_config([SerialBus("rs485", "/dev/null", timeout_max_s=0.1)], devs,
                      [profile("water_meter")])
    out: list[Reading] = []
    poller = Poller(cfg, {"rs485": bus}, out.append, clock=clock(), rng=random.Random(7))
    waited: dict[str, float] = {}

    async def main() -> None:
        task = asyncio.create_task(poller.run())
        async with asyncio.timeout(5):
            while not poller.status()["m2"]["quarantined"]:
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.5)
        st = poller.status()
        assert st["m2"]["quarantined"] and st["m2"]["consecutive_failures"] >= 3
        assert not st["m1"]["quarantined"] and st["m1"]["failures"] == 0
        # the light view rollout's probation and the inventory count with says the same
        view = poller.health_view()
        assert view == {name: {k: d[k] for k in ("consecutive_failures", "last_good_ns",
                                                 "last_error")} for name, d in st.items()}
        assert view["m2"]["last_error"] and view["m1"]["last_good_ns"]
        bus.dead.clear()
        t0 = time.monotonic()
        async with asyncio.timeout(6):  # the next probe: >= 0.1 s timeout / 5 % share = 2 s
            while poller.status()["m2"]["quarantined"]:
                await asyncio.sleep(0.02)
        waited["recovery_s"] = time.monotonic() - t0
        await asyncio.sleep(0.3)
        poller.stop()
        await task

    asyncio.run(main())
    dead_reads = bus.reads_of(2)
    live_reads = bus.reads_of(1)
    # 3 failures + one probe, no sooner than the 5 % share allows (>= 2 s after the last)
    assert waited["recovery_s"] > 0.5
    assert bus.peak == 1
    assert len(live_reads) > 40
    st = poller.status()["m2"]
    assert not st["quarantined"] and st["probes"] >= 1
    assert 3 <= st["failures"] <= 5
    m2 = [r for r in out if r.device == "m2"]
    assert {r.reason for r in m2 if r.quality is Quality.BAD} == {"timeout", "quarantined"}
    assert m2[-1].quality is Quality.GOOD
    assert len(dead_reads) > 5  # polled again after recovery
    msgs = [r.getMessage() for r in caplog.records]
    assert sum("device_down device=m2" in m for m in msgs) == 1
    assert sum("device_recovered device=m2" in m for m in msgs) == 1
    assert all(r.device == "m2" for r in out if r.quality is not Quality.GOOD)


@pytest.mark.timeout(10)
def test_write_is_checked_serialised_and_confirmed() -> None:
    bus = FakeBus("rs485", latency_s=0.003)
    dev = DeviceConfig("lamp", "street_lamp", "rs485", unit_id=3, interval_s=0.01)
    cfg = make_config([SerialBus("rs485", "/dev/null")], [dev], [profile("street_lamp")])
    out: list[Reading] = []
    poller = Poller(cfg, {"rs485": bus}, out.append, clock=clock())

    async def main() -> None:
        task = asyncio.create_task(poller.run())
        await asyncio.sleep(0.05)
        assert await poller.write("lamp", "dimming", 40) == 40
        assert bus.regs[(3, Table.HOLDING, 0)] == 40
        assert await poller.write("lamp", "light_mode", "manual") == "manual"
        assert await poller.write("lamp", "lamp_on", True) is True
        with pytest.raises(BoundsError):
            await poller.write("lamp", "dimming", 101)
        with pytest.raises(BoundsError):
            await poller.write("lamp", "dimming", 40.5)
        with pytest.raises(CommandRefused, match="read-only"):
            await poller.write("lamp", "power", 10)
        with pytest.raises(CodecError):
            await poller.write("lamp", "dimming", "high")
        with pytest.raises(CommandRefused):
            await poller.write("lamp", "nope", 1)
        with pytest.raises(CommandRefused):
            await poller.write("nolamp", "dimming", 1)
        await asyncio.sleep(0.05)
        poller.stop()
        await task

    asyncio.run(main())
    writes = [c for c in bus.calls if c[0] == "write"]
    assert [(t, a, c) for _, _, t, a, c, _ in writes] == [
        (Table.HOLDING, 0, 1), (Table.HOLDING, 1, 1), (Table.COIL, 0, 1)]
    assert bus.peak == 1  # never a write in flight together with a poll
    dims = [r.value for r in out if r.point == "dimming"]
    assert dims[-1] == 40


@pytest.mark.timeout(15)
def test_thousand_devices_spread_over_the_interval() -> None:
    buses = [TcpBus(f"ep{i}", "127.0.0.1", concurrency=2) for i in range(10)]
    fakes = {b.name: FakeBus(b.name, latency_s=0.001) for b in buses}
    devs = [DeviceConfig(f"d{i}", "pipe_pressure", f"ep{i % 10}", unit_id=1 + i // 10,
                         interval_s=1.0) for i in range(1000)]
    cfg = make_config(buses, devs, [profile("pipe_pressure")])
    poller = Poller(cfg, dict(fakes), lambda r: None, clock=clock(), rng=random.Random(1))
    releases: list[float] = []
    t0 = 0.0

    async def main() -> None:
        nonlocal t0
        task = asyncio.create_task(poller.run())
        await asyncio.sleep(0)
        assert poller.planned_at is not None
        t0 = poller.planned_at  # the poller's own start: a loaded host's delay before it is not
        releases.extend(j.release - t0 for j in poller.jobs)  # first releases, before any ran
        await asyncio.sleep(0.5)
        poller.stop()
        await task

    asyncio.run(main())
    assert len(releases) == 1000 and min(releases) >= 0 and max(releases) < 1.01
    per_ms: dict[int, int] = {}
    for t in releases:
        per_ms[int(t * 1000)] = per_ms.get(int(t * 1000), 0) + 1
    assert max(per_ms.values()) <= 6  # uniform phases: ~1 per ms, never a crowd
    assert all(f.peak <= 2 for f in fakes.values())
    first_half = [t - t0 for f in fakes.values() for t in f.times if t - t0 < 0.5]
    per_10ms: dict[int, int] = {}
    for t in first_half:
        per_10ms[int(t * 100)] = per_10ms.get(int(t * 100), 0) + 1
    # about half the devices had their first release in the first half interval
    assert 350 <= len(first_half) <= 650
    assert max(per_10ms.values()) <= 100  # ~10 expected; a loaded host may stall the loop


@pytest.mark.timeout(10)
def test_sink_many_gets_a_jobs_readings_in_one_call_and_read_now_before_it_returns() -> None:
    bus = FakeBus("rs485")
    dev = DeviceConfig("meter", "water_meter", "rs485", unit_id=5, interval_s=0.05)
    cfg = make_config([SerialBus("rs485", "/dev/null")], [dev], [profile("water_meter")])
    one: list[Reading] = []
    many: list[list[Reading]] = []
    poller = Poller(cfg, {"rs485": bus}, one.append, clock=clock(), sink_many=many.append)

    async def main() -> dict[str, object]:
        task = asyncio.create_task(poller.run())
        await asyncio.sleep(0.12)
        before = len(many)
        bus.regs[(5, Table.INPUT, 4)] = 55  # battery changed: the report filter passes it
        got = await poller.read_now("meter", "battery")
        assert len(many) == before + 1 and [r.point for r in many[-1]] == ["battery"]
        poller.stop()
        await task
        return dict(got)

    assert asyncio.run(main()) == {"battery": 55}
    assert one == []  # nothing one by one
    points = len(profile("water_meter").points)
    assert len(many[0]) == points  # the first job: every point (first readings always report)
    assert all(many) and sum(map(len, many)) == poller.readings_emitted


@pytest.mark.timeout(10)
def test_a_quiet_network_starts_its_polls_in_few_wake_ups_on_one_grid() -> None:
    """50 TCP devices at 1 s: not 50 wake-ups a second but ~6, each starting ~8 devices' polls,
    on a grid shared by all endpoints; every device still polled once per interval."""
    buses = [TcpBus(f"ep{i}", "127.0.0.1", concurrency=2) for i in range(50)]
    fakes = {b.name: FakeBus(b.name, latency_s=0.001) for b in buses}
    devs = [DeviceConfig(f"d{i}", "pipe_pressure", f"ep{i}", unit_id=1, interval_s=1.0)
            for i in range(50)]
    poller = Poller(make_config(buses, devs, [profile("pipe_pressure")]), dict(fakes),
                    lambda r: None, clock=clock(), rng=random.Random(5))
    starts: list[float] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.create_task(poller.run())
        await asyncio.sleep(2.1)
        poller.stop()
        await task
        # FakeBus stamps time.monotonic(), the loop's clock
        assert abs(loop.time() - time.monotonic()) < 0.01
        starts.extend(t for f in fakes.values() for t in f.times)

    asyncio.run(main())
    ticks = {s.tick_s for s in poller.schedulers.values()}
    assert len(ticks) == 1 and ticks.pop() == pytest.approx(0.16)
    first = {f.name: f.times[0] for f in fakes.values() if f.times}
    assert len(first) == 50 and all(1 <= len(f.times) <= 3 for f in fakes.values())
    # one start per device per grid point (or half a tick later: a bus's second worker)
    half = 0.08
    assert all(min(t % half, half - t % half) < 0.03 for t in starts)
    wakeups = {round(t / half) for t in starts}
    assert len(wakeups) <= 2.1 / half + 1  # vs. ~100 starts spread over 2 s


@pytest.mark.timeout(10)
def test_read_now_reads_through_the_owner_even_when_quarantined() -> None:
    bus = FakeBus("rs485")
    bus.regs[(4, Table.HOLDING, 0)] = 55  # dimming
    bus.regs[(4, Table.INPUT, 2)] = 456  # power, 0.1 W
    dev = DeviceConfig("lamp", "street_lamp", "rs485", unit_id=4)  # profile intervals: 1 s+
    cfg = make_config([SerialBus("rs485", "/dev/null", timeout_max_s=0.05)], [dev],
                      [profile("street_lamp")])
    out: list[Reading] = []
    poller = Poller(cfg, {"rs485": bus}, out.append, clock=clock())

    async def main() -> None:  # no run(): read_now alone, so every bus call is its own
        got = await poller.read_now("lamp")
        assert got["dimming"] == 55 and got["power"] == pytest.approx(45.6)
        assert set(got) == {p.name for p in profile("street_lamp").points}
        n = len(bus.calls)
        assert await poller.read_now("lamp", "dimming") == {"dimming": 55}
        assert len(bus.calls) == n + 1  # only the request holding the point
        with pytest.raises(CommandRefused):
            await poller.read_now("lamp", "nope")
        with pytest.raises(CommandRefused):
            await poller.read_now("nolamp")
        bus.dead.add(4)
        for _ in range(3):
            with pytest.raises(BusTimeout):
                await poller.read_now("lamp", "dimming")
        assert poller.status()["lamp"]["quarantined"]
        bus.dead.clear()
        assert await poller.read_now("lamp", "power") == {"power": pytest.approx(45.6)}
        assert not poller.status()["lamp"]["quarantined"]

    asyncio.run(main())
    assert next(r.value for r in out if r.point == "dimming") == 55  # also reported


@pytest.mark.timeout(10)
def test_a_district_at_60_s_holds_no_worker_task_between_polls_and_a_crash_surfaces(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Memory of a quiet district: between polls no bus has a worker task (they park until
    their next job); every device is still polled at once. A scheduler bug ends run()."""
    buses = [TcpBus(f"ep{i}", "127.0.0.1", concurrency=2) for i in range(20)]
    fakes = {b.name: FakeBus(b.name, latency_s=0.001) for b in buses}
    devs = [DeviceConfig(f"d{i}-{k}", "pipe_pressure", f"ep{i}", unit_id=k + 1,
                         interval_s=60.0) for i in range(20) for k in range(2)]
    poller = Poller(make_config(buses, devs, [profile("pipe_pressure")]), dict(fakes),
                    lambda r: None, clock=clock(), rng=random.Random(5))

    async def main() -> None:
        task = asyncio.create_task(poller.run())
        await asyncio.sleep(0.3)
        # 40 workers could be waiting; only those of buses with a job due within PARK_S (+ the
        # start grid) are tasks (a parked worker is started only for a due job)
        now, tick = time.monotonic(), max(s.tick_s for s in poller.schedulers.values())
        soon = {j.device.split("-")[0] for j in poller.jobs
                if j.release < now + PARK_S + tick + 0.1 or j.release > now + 60 - 2 * tick}
        assert sum(s.workers_running for s in poller.schedulers.values()) <= 2 * len(soon) < 20
        # every parked worker of a bus waits on its scheduler's one timer
        assert len(timers_for(asyncio.get_running_loop())) <= len(poller.schedulers)
        assert {name for name, _ in poller.status().items()} == {d.name for d in devs}
        # the first releases are spread over the 60 s: queue one due now on a parked bus
        sched = poller.schedulers["ep0"]
        job = next(j for j in poller.jobs if j.device == "d0-0")
        polled = len(fakes["ep0"].times)

        pop = BusScheduler.pop

        def broken(self: BusScheduler, now: float) -> Job | None:
            if self is sched:
                raise RuntimeError("scheduler bug")
            return pop(self, now)

        job.release = time.monotonic()
        sched.queue.add(job)  # wakes ep0's parked worker ...
        await asyncio.sleep(0.1)
        assert len(fakes["ep0"].times) == polled + 1  # ... which polls it at once
        monkeypatch.setattr(BusScheduler, "pop", broken)  # ep0's alone (slots: on the class)
        job.release = time.monotonic()
        sched.queue.add(job)
        with pytest.raises(RuntimeError, match="scheduler bug"):
            await asyncio.wait_for(task, 5)
        assert sum(s.workers_running for s in poller.schedulers.values()) == 0

    asyncio.run(main())
