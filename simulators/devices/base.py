"""The contract every simulated device keeps, whatever transport serves it.

A SimDevice owns a register image laid out by its device profile (one source of truth: the codec
encodes the behaviour model's engineering values into registers) and a behaviour model that moves
those values over simulated time. Transports (TCP server, RTU line, AT modem) call ``read`` /
``write`` and consult ``faults`` to decide how (and whether) to answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from edge_agent.profiles.model import Profile, Table

from ..faults import FaultState


class SimDevice(Protocol):
    name: str
    unit_id: int
    profile: Profile
    faults: FaultState  # consulted by transports on every request (DEAD, SLOW, RTU line faults)

    def read(self, table: Table, address: int, count: int) -> list[int]:
        """Registers (or 0/1 bits) at address..address+count-1, after advancing the model to now.
        Raises edge_agent.errors.ModbusException(2) for addresses the profile does not map when the
        device is strict (``max_gap == 0`` profiles), or the fault-selected exception code."""
        ...

    def write(self, table: Table, address: int, values: Sequence[int]) -> None:
        """Apply a write (holding registers / coils); the behaviour model reacts (e.g. dimming)."""
        ...

    def reboot(self) -> None:
        """Power cycle: faults cleared, volatile state (counters, written set points) reset."""
        ...
