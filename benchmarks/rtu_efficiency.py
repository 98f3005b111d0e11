"""Benchmark: how much of a 9600 8N1 RS-485 line the poller turns into useful transactions.

    .venv/bin/python -m benchmarks.rtu_efficiency [--seconds S] [--rounds N] [--json]

Ten simulated water meters (units 1..10) share one RtuLine (a pty that keeps real line time: a byte
takes one character time, a slave answers after its turnaround, answers arrive no earlier than the
wire allows). The line runs in its own process (real slaves do not share the agent's CPU and GIL).
The agent's real SerialRtuBus and Poller poll them with an interval shorter than a cycle, so the
line is saturated and every lost millisecond shows.

Ideal time of one transaction = request frame + max(slave turnaround, t3.5) + answer frame + t3.5
(the silence the master must keep before its next request). Efficiency = ideal time of the reads
that completed / wall time; while a unit is dead only the live units' reads count (what the line
did for the units that could use it).

Scenarios (first table):
* all alive: the planner's merged reads (one input read 0..15 + one coil read per meter);
* 2 units lack 13..15: units 9 and 10 answer exception 2 outside input 0..12 (a smaller firmware);
  measured after the poller learnt their address maps (their serial number is ``unreadable``);
* one request per point: the naive plan, driven straight through SerialRtuBus (no poller);
* line limit: back-to-back ideal 125-register reads.

A unit dies and comes back (second table), ``--rounds`` times on one line, after an all-alive
phase: **entry** (kill -> quarantined: the failures that find it dead), **steady** (quarantined,
at least ``--seconds`` and two probes), **entry + steady** (the whole time it was dead: the
figure to quote for "one unit dead"), **revival** (back, at a random moment of the probe gap it
is in -> its first answer). Then ``--blinks`` times it comes back at a random moment before the
first probe after its quarantine (a reboot, a power glitch): **revival after a blink**. Per
phase: its length, probes, the dead unit's share of the line (its failed transactions), the live
units' cadence (cycles/s per unit, and relative to the all-alive phase: with one of ten dead the
others could reach 10/9 = 1.11) and the efficiency.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass

from edge_agent.bus.serial_line import SerialRtuBus
from edge_agent.config.model import DeviceConfig, SerialBus
from edge_agent.errors import BusError
from edge_agent.platform.clock import ClockProbe
from edge_agent.poll.engine import Poller
from edge_agent.profiles.load import load_profile
from edge_agent.profiles.model import Profile, Table
from edge_agent.profiles.planner import ReadRequest, one_per_point, plan, rtu_frame_bytes
from edge_agent.profiles.shipped import shipped_dir
from simulators.agent_config import make_config
from simulators.faults import DeviceFault
from simulators.line_process import LineProcess
from simulators.transports.rtu_timing import LineTiming

BAUD = 9600
TURNAROUND_S = 0.005
UNITS = range(1, 11)
DYING = UNITS[-1]
TIMING = LineTiming(BAUD)
TIMEOUT_MAX_S = [0.3]  # the bus's timeout_max_s (--timeout-max)
LACKING = (9, 10)  # units whose firmware lacks input 13..15 in the refusal scenario


def ideal_s(table: Table, count: int) -> float:
    req, resp = rtu_frame_bytes(table, count)
    gaps = max(TURNAROUND_S, TIMING.t35_s) + TIMING.t35_s
    return TIMING.frame_s(req) + TIMING.frame_s(resp) + gaps


def _shape(reqs: Sequence[ReadRequest]) -> list[tuple[str, int, int]]:
    return [(r.table.value, r.address, r.count) for r in reqs]


def plan_ideal_s(reqs: Sequence[ReadRequest]) -> float:
    return sum(ideal_s(r.table, r.count) for r in reqs)


@dataclass
class Row:
    scenario: str
    seconds: float
    cycles: float  # polls of every (live) meter
    ms_per_cycle: float
    ideal_ms_per_cycle: float
    efficiency: float
    registers_per_s: float
    points_per_s: float


@dataclass
class Phase:
    round: int
    phase: str
    seconds: float
    probes: int
    cycles_per_s: float  # per live unit
    dead_share: float  # line time the dead unit's failed transactions took / phase length
    cadence: float  # cycles_per_s / the all-alive phase's
    efficiency: float


@dataclass(frozen=True, slots=True)
class Done:
    t: float
    unit: int
    ideal_s: float
    count: int


class MeteredBus:
    """SerialRtuBus plus a record of the successful reads (what the benchmark counts)."""

    def __init__(self, inner: SerialRtuBus) -> None:
        self.inner = inner
        self.name = inner.name
        self.done: list[Done] = []

    async def read(
        self, unit: int, table: Table, address: int, count: int, *, timeout_s: float
    ) -> list[int]:
        regs = await self.inner.read(unit, table, address, count, timeout_s=timeout_s)
        self.done.append(Done(time.monotonic(), unit, ideal_s(table, count), count))
        return regs

    async def write(
        self, unit: int, table: Table, address: int, values: Sequence[int], *, timeout_s: float
    ) -> None:
        await self.inner.write(unit, table, address, values, timeout_s=timeout_s)

    def min_timeout_s(self, table: Table, count: int) -> float:
        return self.inner.min_timeout_s(table, count)

    async def close(self) -> None:
        await self.inner.close()

    def window(self, t0: float, t1: float, units: Sequence[int]) -> list[Done]:
        return [d for d in self.done if t0 <= d.t < t1 and d.unit in units]


def _row(name: str, secs: float, done: Sequence[Done],
         plans: dict[int, list[ReadRequest]]) -> Row:
    """``plans``: per live unit, what one of its cycles reads."""
    per_cycle = sum(len(p) for p in plans.values())
    cycles = len(done) / per_cycle
    points = sum(len(r.points) for p in plans.values() for r in p)  # read per cycle of all
    return Row(
        scenario=name,
        seconds=round(secs, 2),
        cycles=round(cycles, 1),
        ms_per_cycle=round(1000 * secs / cycles, 1) if cycles else float("inf"),
        ideal_ms_per_cycle=round(1000 * sum(plan_ideal_s(p) for p in plans.values()), 1),
        efficiency=round(sum(d.ideal_s for d in done) / secs, 3),
        registers_per_s=round(sum(d.count for d in done) / secs, 1),
        points_per_s=round(cycles * points / secs, 1),
    )


class Run:
    """A Poller on the line, its metered bus, and the meters' configs."""

    def __init__(self, profile: Profile, line: LineProcess) -> None:
        bus_cfg = SerialBus("rs485", line.path, baud=BAUD, timeout_max_s=TIMEOUT_MAX_S[0])
        devs = [DeviceConfig(f"wm{u}", profile.name, "rs485", unit_id=u, interval_s=0.05)
                for u in UNITS]
        self.bus = MeteredBus(SerialRtuBus(bus_cfg))
        self.poller = Poller(make_config([bus_cfg], devs, [profile]), {"rs485": self.bus},
                             lambda r: None, clock=ClockProbe())

    def plans(self, units: Sequence[int]) -> dict[int, list[ReadRequest]]:
        return {u: self.poller.devices[f"wm{u}"].plan.requests for u in units}

    async def __call__(self, body: Callable[[Run], Awaitable[None]]) -> None:
        task = asyncio.create_task(self.poller.run())
        try:
            await asyncio.sleep(1.0)  # warm-up: timeouts learnt
            await body(self)
        finally:
            self.poller.stop()
            await task
            await self.bus.close()


async def _until(cond: Callable[[], bool], limit_s: float = 120.0) -> float:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > limit_s:
            raise RuntimeError("benchmark condition not reached")
        await asyncio.sleep(0.005)
    return time.monotonic()


def alive_rows(profile: Profile, seconds: float) -> list[Row]:
    rows: list[Row] = []
    with LineProcess("water_meter", UNITS, baud=BAUD, turnaround_s=TURNAROUND_S) as line:
        run = Run(profile, line)

        async def body(run: Run) -> None:
            t0 = time.monotonic()
            await asyncio.sleep(seconds)
            t1 = time.monotonic()
            rows.append(_row("all alive", t1 - t0, run.bus.window(t0, t1, UNITS),
                             run.plans(UNITS)))

        asyncio.run(run(body))
    _violations(line)
    return rows


def lacking_rows(profile: Profile, seconds: float) -> list[Row]:
    rows: list[Row] = []
    with LineProcess("water_meter", UNITS, baud=BAUD, turnaround_s=TURNAROUND_S) as line:
        for u in LACKING:
            line.refuse(u, [(Table.INPUT, 13, 200)])
        run = Run(profile, line)

        async def body(run: Run) -> None:
            await asyncio.sleep(1.0)  # the refusals narrowed, the maps learnt
            s0, t0 = line.stats(), time.monotonic()
            await asyncio.sleep(seconds)
            t1, s1 = time.monotonic(), line.stats()
            plans = run.plans(UNITS)
            name = f"{len(LACKING)} units lack 13..15"
            rows.append(_row(name, t1 - t0, run.bus.window(t0, t1, UNITS), plans))
            refused = sum(s1.exceptions[u] - s0.exceptions[u] for u in LACKING)
            print(f"{name}: learnt plan {_shape(plans[LACKING[0]])} (the others "
                  f"{_shape(plans[1])}); refused reads in the window: {refused} (unreadable "
                  "points tried again on the quarantine schedule)", file=sys.stderr)

        asyncio.run(run(body))
    _violations(line)
    return rows


def dying_phases(profile: Profile, seconds: float, rounds: int, blinks: int,
                 seed: int) -> list[Phase]:
    phases: list[Phase] = []
    live = [u for u in UNITS if u != DYING]
    rng = random.Random(seed)
    with LineProcess("water_meter", UNITS, baud=BAUD, turnaround_s=TURNAROUND_S) as line:
        run = Run(profile, line)
        dev = run.poller.devices[f"wm{DYING}"]
        per_cycle = len(run.plans([1])[1])
        ideal_cycle = plan_ideal_s(run.plans([1])[1])

        def phase(r: int, name: str, t0: float, t1: float, units: Sequence[int],
                  probes: int, alive_rate: float, lost_s: float = 0.0) -> Phase:
            done = run.bus.window(t0, t1, units)
            rate = len(done) / per_cycle / len(units) / (t1 - t0)
            return Phase(r, name, round(t1 - t0, 2), probes, round(rate, 3),
                         round(lost_s / (t1 - t0), 3),
                         round(rate / alive_rate, 3) if alive_rate else 1.0,
                         round(sum(d.ideal_s for d in done) / (t1 - t0), 3))

        async def body(run: Run) -> None:
            t0 = time.monotonic()
            await asyncio.sleep(seconds)
            t1 = time.monotonic()
            alive = phase(0, "all alive", t0, t1, UNITS, 0, 0.0)
            phases.append(alive)
            health = dev.health
            for r in range(1, rounds + blinks + 1):
                blink = r > rounds
                line.fault(DYING, DeviceFault.DEAD)
                t_kill, p0, lost0 = time.monotonic(), health.probes, health.failed_time_s
                await _until(lambda: health.quarantined)
                t_q, f_q = health.quarantined_mono or time.monotonic(), health.failures
                lost_q = health.failed_time_s

                def steady_done(f_q: int = f_q, t_q: float = t_q) -> bool:
                    # two probes *failed* (not just started), the phase long enough
                    return health.failures - f_q >= 2 and time.monotonic() - t_q >= seconds

                if not blink:  # a blink: back before the first probe after the quarantine
                    await _until(steady_done)
                # the unit comes back at a random moment of the probe gap it is in
                gap = health.next_probe_at - time.monotonic()
                await asyncio.sleep(rng.uniform(0.0, max(0.0, gap)))
                t_back = time.monotonic()
                probes, lost_back = health.probes - p0, health.failed_time_s
                pto = health.probe_timeout_s
                line.fault(DYING, DeviceFault.NONE)
                n = len(run.bus.done)

                def answered(n: int = n) -> bool:
                    return any(d.unit == DYING for d in run.bus.done[n:])

                await _until(answered)
                t_found = next(d.t for d in run.bus.done[n:] if d.unit == DYING)
                print(f"round {r}: the probe gap it came back in: {gap:.2f} s, next probe's "
                      f"timeout {pto:.3f} s", file=sys.stderr)
                rate = alive.cycles_per_s
                phases.extend([
                    phase(r, "entry: dead -> quarantined", t_kill, t_q, live, 0, rate,
                          lost_q - lost0),
                    phase(r, "blink: quarantined" if blink else "steady: quarantined", t_q,
                          t_back, live, probes, rate, lost_back - lost_q),
                ])
                if not blink:
                    phases.append(phase(r, "entry + steady (dead)", t_kill, t_back, live,
                                        probes, rate, lost_back - lost0))
                phases.append(phase(r, "revival after a blink" if blink else
                                    "revival: back -> answer", t_back, t_found, live,
                                    dev.health.probes - p0 - probes, rate))
                await asyncio.sleep(2.0)  # back to normal before the next round

        asyncio.run(run(body))
        print(f"ideal ms/cycle of one meter: {1000 * ideal_cycle:.1f}", file=sys.stderr)
    _violations(line)
    return phases


_VIOLATIONS = [0]


def _violations(line: LineProcess) -> None:
    _VIOLATIONS[0] += line.final.violations


async def _naive(profile: Profile, line: LineProcess, seconds: float) -> Row:
    bus_cfg = SerialBus("rs485", line.path, baud=BAUD, timeout_max_s=TIMEOUT_MAX_S[0])
    bus = MeteredBus(SerialRtuBus(bus_cfg))
    reqs = one_per_point(profile.modbus_points)
    errors = 0
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            for u in UNITS:
                for r in reqs:
                    try:
                        await bus.read(u, r.table, r.address, r.count,
                                       timeout_s=TIMEOUT_MAX_S[0])
                    except BusError:
                        errors += 1
        secs = time.monotonic() - t0
    finally:
        await bus.close()
    if errors:
        print(f"one-per-point: {errors} failed reads", file=sys.stderr)
    return _row("one request per point", secs, bus.done, dict.fromkeys(UNITS, reqs))


def naive_rows(profile: Profile, seconds: float) -> list[Row]:
    with LineProcess("water_meter", UNITS, baud=BAUD, turnaround_s=TURNAROUND_S) as line:
        row = asyncio.run(_naive(profile, line, seconds))
    _violations(line)
    return [row]


def line_limit() -> Row:
    per = ideal_s(Table.INPUT, 125)
    return Row("line limit (125-reg reads)", 0.0, 0.0, 0.0, 0.0, 1.0, round(125 / per, 1), 0.0)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="benchmarks.rtu_efficiency", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=8.0,
                    help="measuring window per scenario, and least steady phase")
    ap.add_argument("--rounds", type=int, default=3, help="times unit 10 dies and comes back")
    ap.add_argument("--blinks", type=int, default=2,
                    help="times it comes back before the first probe after its quarantine")
    ap.add_argument("--timeout-max", type=float, default=0.3,
                    help="the bus's timeout_max_s (the agent's default is 1.0)")
    ap.add_argument("--seed", type=int, default=1, help="when in a probe gap the unit returns")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = ap.parse_args(argv)
    TIMEOUT_MAX_S[0] = args.timeout_max
    load0 = os.getloadavg()
    profile = load_profile(shipped_dir() / "water_meter.toml")
    rows = [*alive_rows(profile, args.seconds), *lacking_rows(profile, args.seconds),
            *naive_rows(profile, args.seconds), line_limit()]
    phases = dying_phases(profile, args.seconds, args.rounds, args.blinks, args.seed)
    load1 = os.getloadavg()
    print(f"timeout_max_s={args.timeout_max} seconds={args.seconds} rounds={args.rounds} "
          f"blinks={args.blinks} "
          f"seed={args.seed}; load average (1, 5, 15 min) at start "
          f"{', '.join(f'{x:.2f}' for x in load0)}, at end {', '.join(f'{x:.2f}' for x in load1)}")
    print(f"silent-interval violations recorded by the line: {_VIOLATIONS[0]}")
    planned = plan(profile.modbus_points, max_gap=profile.max_gap)
    print(f"water meter: {len(profile.modbus_points)} points; planned requests "
          f"{_shape(planned)}; "
          f"one-per-point {len(one_per_point(profile.modbus_points))} requests")
    if args.json:
        print(json.dumps({"rows": [asdict(r) for r in rows],
                          "phases": [asdict(p) for p in phases]}, indent=1))
        return 0
    head = f"{'scenario':<28} {'cycles':>7} {'ms/cycle':>9} {'ideal ms':>9} {'effic.':>7} " \
           f"{'regs/s':>8} {'points/s':>9}"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r.scenario:<28} {r.cycles:>7} {r.ms_per_cycle:>9} {r.ideal_ms_per_cycle:>9} "
              f"{r.efficiency:>7} {r.registers_per_s:>8} {r.points_per_s:>9}")
    print()
    head = f"{'rnd':>3} {'unit 10 dies, comes back':<28} {'seconds':>8} {'probes':>7} " \
           f"{'dead share':>10} {'cycles/s':>9} {'cadence':>8} {'effic.':>7}"
    print(head)
    print("-" * len(head))
    for p in phases:
        print(f"{p.round:>3} {p.phase:<28} {p.seconds:>8} {p.probes:>7} {p.dead_share:>10} "
              f"{p.cycles_per_s:>9} {p.cadence:>8} {p.efficiency:>7}")
    for name in ("entry: dead -> quarantined", "entry + steady (dead)",
                 "revival: back -> answer", "revival after a blink"):
        got = [p for p in phases if p.phase == name]
        if not got:
            continue
        secs = [p.seconds for p in got]
        print(f"{name}: {min(secs)}..{max(secs)} s (median {round(statistics.median(secs), 2)}), "
              f"efficiency {min(p.efficiency for p in got)}..{max(p.efficiency for p in got)}, "
              f"cadence {min(p.cadence for p in got)}..{max(p.cadence for p in got)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
