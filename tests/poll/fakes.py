"""Test helpers: profiles, the AgentConfig builder (from simulators.agent_config) and an
in-memory ModbusBus (for pure-logic engine tests)."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from pathlib import Path

from edge_agent.errors import BusTimeout, ModbusException
from edge_agent.profiles.load import load_profile
from edge_agent.profiles.model import ModbusPoint, Profile, Table
from edge_agent.profiles.planner import MAX_BITS, MAX_REGISTERS
from simulators.agent_config import make_config

__all__ = ["PROFILES", "ROOT", "FakeBus", "accepted_optimum", "make_config", "profile"]

ROOT = Path(__file__).resolve().parents[2]
PROFILES = ROOT / "device_profiles"


def profile(name: str) -> Profile:
    return load_profile(PROFILES / f"{name}.toml")


class FakeBus:
    """Registers in dicts; ``dead`` units time out, ``strict`` units refuse unmapped addresses."""

    def __init__(self, name: str, latency_s: float = 0.002) -> None:
        self.name = name
        self.latency_s = latency_s
        self.regs: dict[tuple[int, Table, int], int] = {}
        self.dead: set[int] = set()
        self.strict: dict[int, set[tuple[Table, int]]] = {}
        self.calls: list[tuple[str, int, Table, int, int, float]] = []
        self.times: list[float] = []  # time.monotonic() of each transaction
        self.active = 0
        self.peak = 0

    async def _enter(self, kind: str, unit: int, table: Table, address: int, count: int,
                     timeout_s: float) -> None:
        self.calls.append((kind, unit, table, address, count, timeout_s))
        self.times.append(time.monotonic())
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            if unit in self.dead:
                await asyncio.sleep(timeout_s)
                raise BusTimeout(f"unit {unit}: no answer in {timeout_s:.3f}s")
            await asyncio.sleep(self.latency_s)
        finally:
            self.active -= 1
        mapped = self.strict.get(unit)
        if mapped is not None and any(
            (table, a) not in mapped for a in range(address, address + count)
        ):
            raise ModbusException(ModbusException.ILLEGAL_DATA_ADDRESS)

    async def read(
        self, unit: int, table: Table, address: int, count: int, *, timeout_s: float
    ) -> list[int]:
        await self._enter("read", unit, table, address, count, timeout_s)
        return [self.regs.get((unit, table, a), 0) for a in range(address, address + count)]

    async def write(
        self, unit: int, table: Table, address: int, values: Sequence[int], *, timeout_s: float
    ) -> None:
        await self._enter("write", unit, table, address, len(values), timeout_s)
        for i, v in enumerate(values):
            self.regs[(unit, table, address + i)] = v

    def min_timeout_s(self, table: Table, count: int) -> float:
        return 0.001

    async def close(self) -> None:
        pass

    def reads_of(self, unit: int) -> list[tuple[Table, int, int]]:
        return [(t, a, c) for k, u, t, a, c, _ in self.calls if k == "read" and u == unit]


def accepted_optimum(points: list[ModbusPoint], refused: set[tuple[Table, int]],
                     max_gap: int) -> int:
    """Fewest reads covering every readable point without touching a refused address: an
    O(n^2) dynamic programme written independently of the planner."""
    total = 0
    for table in {p.table for p in points}:
        spans: list[list[int]] = []
        for p in sorted((p for p in points if p.table is table), key=lambda p: p.address):
            if spans and p.address < spans[-1][1]:
                spans[-1][1] = max(spans[-1][1], p.end)
            else:
                spans.append([p.address, p.end])
        ok = [s for s in spans if all((table, a) not in refused for a in range(*s))]
        cap = MAX_BITS if table.is_bits else MAX_REGISTERS

        def run_ok(j: int, i: int, ok: list[list[int]] = ok, cap: int = cap,
                   table: Table = table) -> bool:
            lo, hi = ok[j][0], ok[i - 1][1]
            return (hi - lo <= cap
                    and all(ok[k + 1][0] - ok[k][1] <= max_gap for k in range(j, i - 1))
                    and all((table, a) not in refused for a in range(lo, hi)))

        best = [0] + [math.inf] * len(ok)
        for i in range(1, len(ok) + 1):
            best[i] = min(best[j] + 1 for j in range(i) if run_ok(j, i))
        total += int(best[-1])
    return total
