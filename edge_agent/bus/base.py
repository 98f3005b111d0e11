"""The contract between the poller and a bus owner.

A bus owner serialises access to one physical line (RTU: strictly one transaction at a time,
keeping the 3.5-character silent interval and the turnaround) or one TCP endpoint (a small number of
transactions in flight). Bit tables (coil/discrete) travel as lists of 0/1 ints.

Errors: BusTimeout, FrameError, ModbusException (device exception code), BusClosed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from edge_agent.profiles.model import Table


class ModbusBus(Protocol):
    name: str

    async def read(
        self, unit: int, table: Table, address: int, count: int, *, timeout_s: float
    ) -> list[int]:
        """Read ``count`` registers (or bits) starting at ``address`` from ``unit``."""
        ...

    async def write(
        self, unit: int, table: Table, address: int, values: Sequence[int], *, timeout_s: float
    ) -> None:
        """Write registers (holding) or bits (coil); the device's echo is checked."""
        ...

    def min_timeout_s(self, table: Table, count: int) -> float:
        """Lower bound for a timeout: request + response frame time + turnaround (0 for TCP)."""
        ...

    async def close(self) -> None: ...
