"""Benchmark: how much of a 9600 8N1 RS-485 line the poller turns into useful transactions.

    .venv/bin/python -m benchmarks.rtu_efficiency [--seconds S] [--json]

Ten simulated water meters (units 1..10) share one RtuLine (a pty that keeps real line time: a byte
takes one character time, a slave answers after its turnaround, answers arrive no earlier than the
wire allows). The line runs in its own process (real slaves do not share the agent's CPU and GIL).
The agent's real SerialRtuBus and Poller poll them with an interval shorter than a cycle, so the
line is saturated and every lost millisecond shows.

Ideal time of one transaction = request frame + max(slave turnaround, t3.5) + answer frame + t3.5
(the silence the master must keep before its next request). Efficiency = ideal time of the
transactions that completed / wall time; with a dead unit only the live units' transactions count.

Scenarios:
* planned, all alive: the planner's merged reads (one input read 0..15 + one coil read per meter);
* planned, unit 10 dead: measured after the unit is quarantined (steady state; the quarantine's
  entry cost is shown separately);
* one request per point: the naive plan, driven straight through SerialRtuBus (no poller);
* line limit: back-to-back ideal 125-register reads.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
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
TIMING = LineTiming(BAUD)


def ideal_s(table: Table, count: int) -> float:
    req, resp = rtu_frame_bytes(table, count)
    gaps = max(TURNAROUND_S, TIMING.t35_s) + TIMING.t35_s
    return TIMING.frame_s(req) + TIMING.frame_s(resp) + gaps


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


class MeteredBus:
    """SerialRtuBus plus a tally of the successful reads (what the benchmark counts)."""

    def __init__(self, inner: SerialRtuBus) -> None:
        self.inner = inner
        self.name = inner.name
        self.ideal_s = 0.0
        self.registers = 0
        self.reads = 0

    async def read(
        self, unit: int, table: Table, address: int, count: int, *, timeout_s: float
    ) -> list[int]:
        regs = await self.inner.read(unit, table, address, count, timeout_s=timeout_s)
        self.ideal_s += ideal_s(table, count)
        self.registers += count
        self.reads += 1
        return regs

    async def write(
        self, unit: int, table: Table, address: int, values: Sequence[int], *, timeout_s: float
    ) -> None:
        await self.inner.write(unit, table, address, values, timeout_s=timeout_s)

    def min_timeout_s(self, table: Table, count: int) -> float:
        return self.inner.min_timeout_s(table, count)

    async def close(self) -> None:
        await self.inner.close()


def _row(name: str, secs: float, bus: MeteredBus, reqs: Sequence[ReadRequest], live: int) -> Row:
    per_cycle = len(reqs) * live
    cycles = bus.reads / per_cycle
    npoints = sum(len(r.points) for r in reqs)
    return Row(
        scenario=name,
        seconds=round(secs, 2),
        cycles=round(cycles, 1),
        ms_per_cycle=round(1000 * secs / cycles, 1) if cycles else float("inf"),
        ideal_ms_per_cycle=round(1000 * sum(ideal_s(r.table, r.count) for r in reqs) * live, 1),
        efficiency=round(bus.ideal_s / secs, 3),
        registers_per_s=round(bus.registers / secs, 1),
        points_per_s=round(cycles * live * npoints / secs, 1),
    )


async def _poll(profile: Profile, line: LineProcess, seconds: float, dead: bool) -> list[Row]:
    bus_cfg = SerialBus("rs485", line.path, baud=BAUD, timeout_max_s=0.3)
    devs = [DeviceConfig(f"wm{u}", profile.name, "rs485", unit_id=u, interval_s=0.05)
            for u in UNITS]
    bus = MeteredBus(SerialRtuBus(bus_cfg))
    poller = Poller(make_config([bus_cfg], devs, [profile]), {"rs485": bus}, lambda r: None,
                    clock=ClockProbe())
    reqs = poller.devices["wm1"].plan.requests
    task = asyncio.create_task(poller.run())
    rows: list[Row] = []
    try:
        await asyncio.sleep(1.0)  # warm-up: timeouts learnt
        if dead:
            line.fault(UNITS[-1], DeviceFault.DEAD)
            t_kill, before = time.monotonic(), bus.ideal_s
            while not poller.status()[f"wm{UNITS[-1]}"]["quarantined"]:
                await asyncio.sleep(0.01)
            entry = time.monotonic() - t_kill
            lost = poller.status()[f"wm{UNITS[-1]}"]["failed_time_s"]
            print(f"quarantine entry: {entry:.2f} s wall, {lost:.2f} s of failed transactions, "
                  f"efficiency meanwhile {(bus.ideal_s - before) / entry:.3f}", file=sys.stderr)
        bus.ideal_s, bus.registers, bus.reads = 0.0, 0, 0
        t0 = time.monotonic()
        await asyncio.sleep(seconds)
        secs = time.monotonic() - t0
        name = "planned, unit 10 dead" if dead else "planned, all alive"
        rows.append(_row(name, secs, bus, reqs, len(UNITS) - (1 if dead else 0)))
        if dead:
            st = poller.status()[f"wm{UNITS[-1]}"]
            print(f"dead unit: probes={st['probes']} failed_time_s={st['failed_time_s']}",
                  file=sys.stderr)
    finally:
        poller.stop()
        await task
        await bus.close()
    return rows


async def _naive(profile: Profile, line: LineProcess, seconds: float) -> Row:
    bus_cfg = SerialBus("rs485", line.path, baud=BAUD, timeout_max_s=0.3)
    bus = MeteredBus(SerialRtuBus(bus_cfg))
    reqs = one_per_point(profile.modbus_points)
    errors = 0
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            for u in UNITS:
                for r in reqs:
                    try:
                        await bus.read(u, r.table, r.address, r.count, timeout_s=0.3)
                    except BusError:
                        errors += 1
        secs = time.monotonic() - t0
    finally:
        await bus.close()
    if errors:
        print(f"one-per-point: {errors} failed reads", file=sys.stderr)
    return _row("one request per point", secs, bus, reqs, len(UNITS))


def line_limit() -> Row:
    per = ideal_s(Table.INPUT, 125)
    return Row("line limit (125-reg reads)", 0.0, 0.0, 0.0, 0.0, 1.0, round(125 / per, 1), 0.0)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="benchmarks.rtu_efficiency", description=__doc__)
    ap.add_argument("--seconds", type=float, default=8.0, help="measuring window per scenario")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = ap.parse_args(argv)
    profile = load_profile(shipped_dir() / "water_meter.toml")
    rows: list[Row] = []
    violations = 0
    for dead in (False, True):
        with LineProcess("water_meter", UNITS, baud=BAUD, turnaround_s=TURNAROUND_S) as line:
            rows.extend(asyncio.run(_poll(profile, line, args.seconds, dead)))
        violations += line.final.violations
    with LineProcess("water_meter", UNITS, baud=BAUD, turnaround_s=TURNAROUND_S) as line:
        rows.append(asyncio.run(_naive(profile, line, args.seconds)))
    violations += line.final.violations
    print(f"silent-interval violations recorded by the line: {violations}")
    rows.append(line_limit())
    planned = plan(profile.modbus_points, max_gap=profile.max_gap)
    print(f"water meter: {len(profile.modbus_points)} points; planned requests "
          f"{[(r.table.value, r.address, r.count) for r in planned]}; "
          f"one-per-point {len(one_per_point(profile.modbus_points))} requests")
    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=1))
        return 0
    head = f"{'scenario':<28} {'cycles':>7} {'ms/cycle':>9} {'ideal ms':>9} {'effic.':>7} " \
           f"{'regs/s':>8} {'points/s':>9}"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r.scenario:<28} {r.cycles:>7} {r.ms_per_cycle:>9} {r.ideal_ms_per_cycle:>9} "
              f"{r.efficiency:>7} {r.registers_per_s:>8} {r.points_per_s:>9}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
