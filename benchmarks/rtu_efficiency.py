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

The line, the ideal time and the metered bus are in benchmarks/_rtu_measure.py, the dead-unit
rounds in benchmarks/_rtu_dead_unit.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict

from benchmarks._rtu_dead_unit import dying_phases
from benchmarks._rtu_measure import (
    BAUD,
    TIMEOUT_MAX_S,
    TURNAROUND_S,
    UNITS,
    VIOLATIONS,
    MeteredBus,
    Row,
    Run,
    count_violations,
    ideal_s,
    row,
    shape,
)
from edge_agent.bus.serial_line import SerialRtuBus
from edge_agent.config.model import SerialBus
from edge_agent.errors import BusError
from edge_agent.profiles.load import load_profile
from edge_agent.profiles.model import Profile, Table
from edge_agent.profiles.planner import one_per_point, plan
from edge_agent.profiles.shipped import shipped_dir
from simulators.line_process import LineProcess

LACKING = (9, 10)  # units whose firmware lacks input 13..15 in the refusal scenario


def alive_rows(profile: Profile, seconds: float) -> list[Row]:
    rows: list[Row] = []
    with LineProcess("water_meter", UNITS, baud=BAUD, turnaround_s=TURNAROUND_S) as line:
        run = Run(profile, line)

        async def body(run: Run) -> None:
            t0 = time.monotonic()
            await asyncio.sleep(seconds)
            t1 = time.monotonic()
            rows.append(row("all alive", t1 - t0, run.bus.window(t0, t1, UNITS),
                             run.plans(UNITS)))

        asyncio.run(run(body))
    count_violations(line)
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
            rows.append(row(name, t1 - t0, run.bus.window(t0, t1, UNITS), plans))
            refused = sum(s1.exceptions[u] - s0.exceptions[u] for u in LACKING)
            print(f"{name}: learnt plan {shape(plans[LACKING[0]])} (the others "
                  f"{shape(plans[1])}); refused reads in the window: {refused} (unreadable "
                  "points tried again on the quarantine schedule)", file=sys.stderr)

        asyncio.run(run(body))
    count_violations(line)
    return rows


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
    return row("one request per point", secs, bus.done, dict.fromkeys(UNITS, reqs))


def naive_rows(profile: Profile, seconds: float) -> list[Row]:
    with LineProcess("water_meter", UNITS, baud=BAUD, turnaround_s=TURNAROUND_S) as line:
        row = asyncio.run(_naive(profile, line, seconds))
    count_violations(line)
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
    print(f"silent-interval violations recorded by the line: {VIOLATIONS[0]}")
    planned = plan(profile.modbus_points, max_gap=profile.max_gap)
    print(f"water meter: {len(profile.modbus_points)} points; planned requests "
          f"{shape(planned)}; "
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
