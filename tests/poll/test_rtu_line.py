"""The Poller on a real (pty) RS-485 line: SerialRtuBus against simulated devices on an RtuLine."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from edge_agent.bus.serial_line import SerialRtuBus
from edge_agent.config.model import DeviceConfig, SerialBus
from edge_agent.platform.clock import ClockProbe
from edge_agent.poll.engine import Poller
from edge_agent.profiles.model import Table
from edge_agent.readings import Quality, Reading
from simulators.faults import DeviceFault
from simulators.line_process import LineProcess, LineStats
from tests.poll.conftest import LineFactory, sim_devices
from tests.poll.fakes import make_config, profile


def serial_cfg(path: str) -> SerialBus:
    return SerialBus("rs485", path, baud=9600, timeout_max_s=0.3)


class RecordingBus(SerialRtuBus):
    """The real SerialRtuBus, noting when each successful read completed, per unit."""

    def __init__(self, cfg: SerialBus) -> None:
        super().__init__(cfg)
        self.done: list[tuple[float, int]] = []

    async def read(
        self, unit: int, table: Table, address: int, count: int, *, timeout_s: float
    ) -> list[int]:
        regs = await super().read(unit, table, address, count, timeout_s=timeout_s)
        self.done.append((time.monotonic(), unit))
        return regs

    def rate(self, units: set[int], t0: float, t1: float) -> float:
        """Reads/s of ``units`` in [t0, t1], from the first to the last completion inside it
        (no quantisation at the window's edges)."""
        ts = [t for t, u in self.done if u in units and t0 <= t <= t1]
        return (len(ts) - 1) / (ts[-1] - ts[0])


async def with_poller(
    cfg_bus: SerialBus, devs: list[DeviceConfig], profile_name: str, out: list[Reading],
    body: Callable[[Poller], Awaitable[None]], bus: RecordingBus | None = None,
) -> None:
    bus = bus or RecordingBus(cfg_bus)
    cfg = make_config([cfg_bus], devs, [profile(profile_name)])
    poller = Poller(cfg, {"rs485": bus}, out.append, clock=ClockProbe(boot_id="b"))
    task = asyncio.create_task(poller.run())
    try:
        await body(poller)
    finally:
        poller.stop()
        await task
        await bus.close()


@pytest.mark.timeout(60)
def test_ten_meters_one_dead_costs_only_its_probe_share_and_is_found_when_back() -> None:
    with LineProcess("water_meter", range(1, 11)) as line:
        ten_meters_one_dead(line)
    assert line.final.violations == 0


def ten_meters_one_dead(line: LineProcess) -> None:
    cfg_bus = serial_cfg(line.path)
    # interval below the ~0.95 s a full cycle takes on the line: the line is saturated and any
    # time the dead unit takes comes out of the others' cadence
    devs = [DeviceConfig(f"wm{u}", "water_meter", "rs485", unit_id=u, interval_s=0.5)
            for u in range(1, 11)]
    out: list[Reading] = []
    numbers: dict[str, float] = {}
    bus = RecordingBus(cfg_bus)
    alive = set(range(1, 10))
    wm10_status: dict[str, object] = {}

    async def body(poller: Poller) -> None:
        await asyncio.sleep(1.0)  # warm-up: adaptive timeouts learnt
        t_a = time.monotonic()
        await asyncio.sleep(3.0)
        t_b = time.monotonic()
        line.fault(10, DeviceFault.DEAD)
        while not poller.status()["wm10"]["quarantined"]:
            await asyncio.sleep(0.05)
        t_c = time.monotonic()
        lost_c = poller.status()["wm10"]["failed_time_s"]
        asked_c = line.stats().requests[10]
        await asyncio.sleep(4.0)
        t_d = time.monotonic()
        lost_d = poller.status()["wm10"]["failed_time_s"]
        numbers["asked_dead_unit"] = line.stats().requests[10] - asked_c
        wm10_status.update(poller.status()["wm10"])
        numbers["rate_all_alive"] = bus.rate(alive, t_a, t_b)
        numbers["rate_one_dead"] = bus.rate(alive, t_c, t_d)
        numbers["dead_share"] = (lost_d - lost_c) / (t_d - t_c)
        numbers["quarantine_s"] = t_c - t_b
        # from the kill on, quarantine entry included
        numbers["rate_since_kill"] = bus.rate(alive, t_b, t_d)
        numbers["share_since_kill"] = lost_d / (t_d - t_b)
        # it comes back: found by the next scheduled probe, not later
        health = poller.devices["wm10"].health
        numbers["next_probe_in"] = health.next_probe_at - time.monotonic()
        n = len(bus.done)
        line.fault(10, DeviceFault.NONE)
        t_e = time.monotonic()
        while not any(u == 10 for _, u in bus.done[n:]):
            assert time.monotonic() - t_e < 30, poller.status()["wm10"]
            await asyncio.sleep(0.02)
        numbers["revival_s"] = next(t for t, u in bus.done[n:] if u == 10) - t_e
        await asyncio.sleep(0.5)
        numbers["back_polled"] = not poller.status()["wm10"]["quarantined"]

    asyncio.run(with_poller(cfg_bus, devs, "water_meter", out, body, bus))
    # the nine live meters had 9/10 of the line; with the tenth dead they may use all of it
    # except what its probes cost
    expected = numbers["rate_all_alive"] * 10 / 9
    degradation = 1 - numbers["rate_one_dead"] / expected
    degradation_since_kill = 1 - numbers["rate_since_kill"] / expected
    print(f"poll-share numbers: {numbers} degradation={degradation:.3f} "
          f"since_kill={degradation_since_kill:.3f}")
    assert numbers["dead_share"] <= 0.05 + 1e-6
    assert numbers["asked_dead_unit"] <= 1, (numbers, wm10_status)  # at most one probe in 4 s
    # rates measured seconds apart on a loaded 2-core CI host scatter by up to ~+-15 %; a dead
    # unit that is not quarantined would cost ~50 % here (three timeouts per 0.85 s cycle), so
    # these bounds still tell the two apart. The precise figures are benchmarks.rtu_efficiency's.
    assert degradation <= numbers["dead_share"] + 0.25
    assert degradation_since_kill <= numbers["share_since_kill"] + 0.25
    assert numbers["share_since_kill"] < 0.45  # three failed transactions, then nothing
    assert numbers["quarantine_s"] < 10.0  # three failed cycles
    bad = {r.reason for r in out if r.quality is not Quality.GOOD and r.device != "wm10"}
    assert bad == set()
    wm10 = [r for r in out if r.device == "wm10"]
    assert any(r.quality is Quality.STALE and r.reason == "quarantined" for r in wm10)
    # revival: by the probe that was due when it came back (+ its own read, a loaded host)
    assert numbers["revival_s"] <= max(0.0, numbers["next_probe_in"]) + 1.5, numbers
    assert numbers["back_polled"] and wm10[-1].quality is Quality.GOOD


@pytest.mark.timeout(20)
def test_strict_cover_refuses_merged_read_and_breaks_are_learnt() -> None:
    mc = profile("manhole_cover")
    assert mc.max_gap == 0  # the simulated cover is strict: unmapped addresses -> exception 2
    # a plan with a bigger gap than the profile allows: reads through unmapped 4, 6 and 7
    devs = [DeviceConfig("mc7", "manhole_cover", "rs485", unit_id=7, max_gap=8, interval_s=0.2)]
    out: list[Reading] = []
    steady: list[tuple[int, int]] = []

    async def body(poller: Poller) -> None:
        await asyncio.sleep(1.2)
        steady.extend((r.address, r.count) for r in poller.devices["mc7"].plan.requests)
        st = poller.status()["mc7"]
        assert st["breaks"] == 2 and st["failures"] == 0

    with LineProcess("manhole_cover", [7]) as line:
        asyncio.run(with_poller(serial_cfg(line.path), devs, "manhole_cover", out, body))
    assert steady == [(0, 4), (5, 1), (8, 1)]
    # the merged read 0..8 and its left half 0..5 (both halves of that accepted: break at 5);
    # next cycle the re-merged 5..8 (both halves accepted: break at 8). Never again
    assert line.final.exceptions[7] == 3
    assert {r.point for r in out} == {p.name for p in mc.points}
    assert all(r.quality is Quality.GOOD for r in out)
    assert line.final.violations == 0


@pytest.mark.timeout(20)
def test_dimming_write_changes_the_simulated_lamps_power(rtu_line: LineFactory) -> None:
    lamp = profile("street_lamp")
    sims = sim_devices(lamp, [3], "lamp")
    line = rtu_line(sims)
    cfg_bus = serial_cfg(line.path)
    devs = [DeviceConfig("lamp3", "street_lamp", "rs485", unit_id=3, interval_s=0.2)]
    out: list[Reading] = []
    powers: dict[int, float] = {}

    async def power_after(poller: Poller, dim: int) -> float:
        assert await poller.write("lamp3", "dimming", dim) == dim
        n = len(out)
        await asyncio.sleep(0.6)
        got = [r.value for r in out[n:] if r.point == "power"]
        assert got, "power did not change after the write"
        value = got[-1]
        assert isinstance(value, float)
        return value

    async def body(poller: Poller) -> None:
        await asyncio.sleep(0.3)
        assert await poller.write("lamp3", "light_mode", "manual") == "manual"
        assert await poller.write("lamp3", "lamp_on", True) is True
        for dim in (30, 80):
            powers[dim] = await power_after(poller, dim)

    asyncio.run(with_poller(cfg_bus, devs, "street_lamp", out, body))
    assert sims[0].snapshot()["dimming"] == 80
    assert powers[30] == pytest.approx(120.0 * 0.30, rel=0.02)
    assert powers[80] == pytest.approx(120.0 * 0.80, rel=0.02)
    assert line.violations == []


@pytest.mark.timeout(20)
def test_bad_crc_gives_bad_readings_for_that_meter_only() -> None:
    devs = [DeviceConfig(f"wm{u}", "water_meter", "rs485", unit_id=u, interval_s=0.25)
            for u in (1, 2)]
    out: list[Reading] = []
    marks: dict[str, int] = {}

    async def body(poller: Poller) -> None:
        await asyncio.sleep(0.6)
        line.fault(2, DeviceFault.BAD_CRC)
        marks["fault"] = len(out)
        await asyncio.sleep(0.7)
        line.fault(2, DeviceFault.NONE)
        marks["clear"] = len(out)
        # wm2 may have been quarantined by then: it is back at the next probe, within seconds
        for _ in range(80):
            await asyncio.sleep(0.1)
            if any(r.device == "wm2" and r.quality is Quality.GOOD for r in out[marks["clear"]:]):
                break
        await asyncio.sleep(0.6)  # a full cycle of good readings after its return

    with LineProcess("water_meter", [1, 2]) as line:
        asyncio.run(with_poller(serial_cfg(line.path), devs, "water_meter", out, body))
    during = out[marks["fault"]:marks["clear"]]
    assert {r.reason for r in during if r.device == "wm2"} == {"crc"}
    assert all(r.quality is Quality.GOOD for r in out if r.device == "wm1")
    after = {r.point: r for r in out[marks["clear"]:] if r.device == "wm2"}
    assert after and all(r.quality is Quality.GOOD for r in after.values())


@pytest.mark.timeout(60)
def test_a_meter_answering_late_costs_its_neighbour_nothing() -> None:
    with LineProcess("water_meter", [1, 2]) as line:
        late_meter_and_neighbour(line)
    assert line.final.violations == 0


def late_meter_and_neighbour(line: LineProcess) -> None:
    """wm1 starts answering 1.5 s late (5x timeout_max): the bus holds the line for each of its
    late answers (attributed to unit 1, discarded) until wm1 is quarantined; wm2 never notices."""
    cfg_bus = serial_cfg(line.path)  # timeout_max 0.3 s, late_answer_window 2.0 s (default)
    assert cfg_bus.late_answer_window_s == 2.0
    devs = [DeviceConfig(f"wm{u}", "water_meter", "rs485", unit_id=u, interval_s=2.0)
            for u in (1, 2)]
    out: list[Reading] = []
    bus = RecordingBus(cfg_bus)
    wm2_seen: list[dict[str, object]] = []
    got: dict[str, object] = {}

    async def body(poller: Poller) -> None:
        await asyncio.sleep(2.5)  # warm-up: timeouts learnt
        t_fault = time.monotonic()
        line.fault(1, DeviceFault.SLOW, slow_s=1.5)
        while not poller.status()["wm1"]["quarantined"]:
            wm2_seen.append(dict(poller.status()["wm2"]))
            assert time.monotonic() - t_fault < 20, poller.status()["wm1"]
            await asyncio.sleep(0.05)
        t_quarantine = time.monotonic()
        for _ in range(80):  # 4 s more with wm1 quarantined
            wm2_seen.append(dict(poller.status()["wm2"]))
            await asyncio.sleep(0.05)
        got.update(wm1=poller.status()["wm1"], wm2=poller.status()["wm2"], line=line.stats(),
                   late=dict(bus.late.count), t_fault=t_fault, t_quarantine=t_quarantine,
                   done1=sum(u == 1 for _, u in bus.done), done2=sum(u == 2 for _, u in bus.done))

    asyncio.run(with_poller(cfg_bus, devs, "water_meter", out, body, bus))
    wm1, wm2, stats = got["wm1"], got["wm2"], got["line"]
    assert isinstance(wm1, dict) and isinstance(wm2, dict) and isinstance(stats, LineStats)
    print(f"late-neighbour: wm1={wm1} wm2={wm2} late={got['late']} holds={bus.late.holds} "
          f"hold_s={bus.late.hold_s:.2f}")
    # the neighbour: no failure of any kind, never quarantined, no deadline missed, all GOOD
    assert wm2["failures"] == 0 and wm2["missed_deadlines"] == 0, wm2
    assert not any(s["quarantined"] or s["failures"] for s in wm2_seen)
    wm2_readings = [r for r in out if r.device == "wm2"]
    assert wm2_readings and all(r.quality is Quality.GOOD for r in wm2_readings)
    # its cadence: a cycle (coil + input read) every 2 s, at worst one delayed by one hold
    # (~1.6 s) but none lost: as many cycles as 2-s periods fit in the window
    t_fault, t_q = got["t_fault"], got["t_quarantine"]
    assert isinstance(t_fault, float) and isinstance(t_q, float)
    cycles = [t for t, u in bus.done if u == 2 and t >= t_fault]
    cycles = [b for a, b in itertools.pairwise([0.0, *cycles]) if b - a > 0.5]
    gaps = [b - a for a, b in itertools.pairwise(cycles)]
    assert gaps and max(gaps) < 2.0 + 1.7 + 0.3, gaps
    assert len(cycles) >= int((t_q + 4.0 - t_fault) / 2.0) - 1, cycles
    # the late meter: every timeout's late answer attributed to unit 1, none to anyone else
    late = got["late"]
    assert late == {1: wm1["failures"]}, (late, wm1)
    assert wm1["failures"] >= 3 and wm1["last_error"] == "timeout"
    # every answer unit 1 put on the wire was either wm1's own (before the fault) or a late one
    assert stats.responses[1] == got["done1"] + wm1["failures"]
    assert stats.responses[2] - int(str(got["done2"])) in (0, 1)  # one may be in flight


@pytest.mark.timeout(90)
def test_a_meter_answering_later_than_the_window_is_learnt_and_costs_its_neighbour_nothing(
) -> None:
    """wm1 answers 0.9 s late, beyond the line's late_answer_window (0.5 s here) and its
    timeout_max (0.3 s). The first hold hears nothing (wm1 taken for silent) and its answer turns
    up later, during other traffic: attributed to it, its lateness learnt -- that one answer may
    cost the neighbour a transaction, nothing can know it before. From then on the hold after
    each of its timeouts covers its lateness, so its late frames never meet a neighbour's
    transaction: for 20 s, wm2 sees no failure, the line no silent-interval violation, and every
    late answer is wm1's, caught inside its own hold."""
    with LineProcess("water_meter", [1, 2]) as line:
        cfg_bus = SerialBus("rs485", line.path, baud=9600, timeout_max_s=0.3,
                            late_answer_window_s=0.5)
        devs = [DeviceConfig(f"wm{u}", "water_meter", "rs485", unit_id=u, interval_s=0.5)
                for u in (1, 2)]
        out: list[Reading] = []
        bus = RecordingBus(cfg_bus)
        got: dict[str, Any] = {}

        async def body(poller: Poller) -> None:
            await asyncio.sleep(2.0)  # warm-up: timeouts learnt
            line.fault(1, DeviceFault.SLOW, slow_s=0.9)
            t0 = time.monotonic()
            while 1 not in bus.late.learnt_s:
                assert time.monotonic() - t0 < 30, poller.status()["wm1"]
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.5)  # what was on the line when it was learnt is over
            got.update(t_learnt=time.monotonic(), wm2=poller.status()["wm2"],
                       line=line.stats(), late=dict(bus.late.count), holds=bus.late.holds,
                       n_out=len(out))
            await asyncio.sleep(20.0)
            got.update(wm1_end=poller.status()["wm1"], wm2_end=poller.status()["wm2"],
                       line_end=line.stats(), late_end=dict(bus.late.count),
                       holds_end=bus.late.holds, learnt=dict(bus.late.learnt_s))

        asyncio.run(with_poller(cfg_bus, devs, "water_meter", out, body, bus))
    print(f"later-than-window: {got} hold_s={bus.late.hold_s:.2f}")
    learnt = got["learnt"][1]
    assert 0.9 < learnt < 1.2, got["learnt"]
    assert bus.late.hold_for(1) >= learnt  # the hold now covers it
    # since it was learnt: the neighbour untouched, the line clean
    assert got["wm2_end"]["failures"] == got["wm2"]["failures"], (got["wm2"], got["wm2_end"])
    assert all(r.quality is Quality.GOOD for r in out[got["n_out"]:] if r.device == "wm2")
    assert got["line_end"].violations == got["line"].violations, got
    # wm1 still asked (quarantine probes) and answering late: each late answer caught in its
    # own hold (one hold per late answer, all attributed to unit 1), no more to anyone else (the
    # neighbour's answer queued behind wm1's first one may have been late once, before)
    late, late_end = got["late"], got["late_end"]
    assert {u: n for u, n in late_end.items() if u != 1} == \
        {u: n for u, n in late.items() if u != 1}, (late, late_end)
    more = late_end[1] - late[1]
    assert more >= 2 and got["holds_end"] - got["holds"] >= more, got
    assert got["wm1_end"]["last_error"] == "timeout"


@pytest.mark.timeout(90)
def test_a_meter_turned_slow_within_timeout_max_is_relearnt_not_quarantined() -> None:
    """wm1 starts answering 0.35 s late, under the line's timeout_max (0.6 s) but far above the
    timeout it had learnt (~0.25 s): its first late answer is caught in the hold and attributed,
    its timeout grows to cover it (up to timeout_max, never beyond), so it is read again at once
    -- not quarantined -- and wm2 never notices."""
    with LineProcess("water_meter", [1, 2]) as line:
        cfg_bus = SerialBus("rs485", line.path, baud=9600, timeout_max_s=0.6)
        devs = [DeviceConfig(f"wm{u}", "water_meter", "rs485", unit_id=u, interval_s=0.5)
                for u in (1, 2)]
        out: list[Reading] = []
        bus = RecordingBus(cfg_bus)
        got: dict[str, Any] = {}

        async def body(poller: Poller) -> None:
            await asyncio.sleep(2.0)  # warm-up: timeouts learnt
            got["before"] = poller.status()["wm1"]
            line.fault(1, DeviceFault.SLOW, slow_s=0.35)
            got["n_fault"], got["t_fault"] = len(out), time.monotonic()
            await asyncio.sleep(10.0)
            got.update(wm1=poller.status()["wm1"], wm2=poller.status()["wm2"],
                       late=dict(bus.late.count))

        asyncio.run(with_poller(cfg_bus, devs, "water_meter", out, body, bus))
        final = line.stats()
    print(f"slow-within-max: {got}")
    before, wm1, wm2 = got["before"], got["wm1"], got["wm2"]
    assert before["timeout_s"] < 0.35, before  # it had learnt a shorter timeout
    assert 0.35 < wm1["timeout_s"] <= 0.6, wm1  # relearnt, within the bus's maximum
    assert not wm1["quarantined"] and wm1["probes"] == 0, wm1
    assert 1 <= wm1["failures"] <= 2, wm1  # what it took to learn
    assert got["late"] == {1: wm1["failures"]}, got["late"]  # each one's answer caught late
    # read all along: its reads (two a cycle, a cycle every 0.5 s) kept coming, what it reports
    # is GOOD but for the failed transactions' points
    reads = [t for t, u in bus.done if u == 1 and t >= got["t_fault"]]
    # each read now takes >= 0.35 s (+ the frames, + wm2's turn): ~20-22 fit in the 10 s, fewer
    # under load; quarantined, it would be asked by a probe every few seconds at most
    gaps = [b - a for a, b in zip([got["t_fault"], *reads], reads, strict=False)]
    print(f"reads after the fault: {len(reads)}, longest pause {max(gaps):.2f} s")
    assert len(reads) >= 15 and max(gaps) < 2.0, (len(reads), gaps)
    bad = [r for r in out[got["n_fault"]:] if r.device == "wm1" and r.quality is not Quality.GOOD]
    assert {r.reason for r in bad} <= {"timeout"}, bad
    assert wm2["failures"] == 0 and final.violations == 0, (wm2, final)
