"""What benchmarks.rtu_efficiency measures with: the line, the ideal time, the metered bus.

Ten simulated water meters (units 1..10) on one 9600 8N1 line in its own process (``LineProcess``).
The ideal time of one transaction is request frame + max(slave turnaround, t3.5) + answer frame +
t3.5; ``MeteredBus`` records every read that completed with its ideal time, so a window of them
gives the efficiency (ideal time of the completed reads / wall time). ``Run`` is a real Poller on
the real SerialRtuBus (metered), warmed up before the scenario's body runs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from edge_agent.bus.serial_line import SerialRtuBus
from edge_agent.config.model import DeviceConfig, SerialBus
from edge_agent.platform.clock import ClockProbe
from edge_agent.poll.engine import Poller
from edge_agent.profiles.model import Profile, Table
from edge_agent.profiles.planner import ReadRequest, rtu_frame_bytes
from simulators.agent_config import make_config
from simulators.line_process import LineProcess
from simulators.transports.rtu_timing import LineTiming

BAUD = 9600
TURNAROUND_S = 0.005
UNITS = range(1, 11)
DYING = UNITS[-1]
TIMING = LineTiming(BAUD)
TIMEOUT_MAX_S = [0.3]  # the bus's timeout_max_s (--timeout-max)


def ideal_s(table: Table, count: int) -> float:
    req, resp = rtu_frame_bytes(table, count)
    gaps = max(TURNAROUND_S, TIMING.t35_s) + TIMING.t35_s
    return TIMING.frame_s(req) + TIMING.frame_s(resp) + gaps


def shape(reqs: Sequence[ReadRequest]) -> list[tuple[str, int, int]]:
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


def row(name: str, secs: float, done: Sequence[Done],
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


async def until(cond: Callable[[], bool], limit_s: float = 120.0) -> float:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > limit_s:
            raise RuntimeError("benchmark condition not reached")
        await asyncio.sleep(0.005)
    return time.monotonic()


VIOLATIONS = [0]


def count_violations(line: LineProcess) -> None:
    VIOLATIONS[0] += line.final.violations
