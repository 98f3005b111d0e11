"""Faults a simulated device or endpoint can be put into, switchable at run time.

Transports consult a device's ``FaultState`` on every request. Tests flip faults directly
(in-process); ``edge-sim fault`` flips them through the scenario's control socket.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from edge_agent.profiles.model import Table


class DeviceFault(enum.StrEnum):
    NONE = "none"
    DEAD = "dead"  # never answers
    SLOW = "slow"  # answers after ``slow_s`` extra
    EXCEPTION = "exception"  # answers with exception ``exception_code`` (2, 3, 6 ...)
    BAD_CRC = "bad_crc"  # RTU: answer with a corrupted CRC
    TRUNCATED = "truncated"  # RTU: answer cut short
    GARBAGE = "garbage"  # RTU: garbage bytes on the line before the answer
    STUCK = "stuck"  # values freeze at their current registers
    OUT_OF_RANGE = "out_of_range"  # values jump outside the physical range
    # reboot is an action, not a state: SimDevice.reboot() restarts counters


class EndpointFault(enum.StrEnum):
    NONE = "none"
    REFUSE = "refuse"  # TCP connect refused (listener closed)
    RESET = "reset"  # connections reset on the next request
    STALL = "stall"  # accepts and reads, never answers


# (table, first, last): an inclusive register (or bit) range of one table
AddressRange = tuple[Table, int, int]


@dataclass(slots=True)
class FaultState:
    kind: DeviceFault = DeviceFault.NONE
    slow_s: float = 0.5
    exception_code: int = 6
    garbage: bytes = b"\x00\xff\x13\x37"
    # address ranges this unit's firmware lacks: any read or write touching one is answered with
    # exception 2 (ILLEGAL DATA ADDRESS), whatever the profile maps there -- a firmware variant
    # older or smaller than the profile. Orthogonal to ``kind``, and kept by ``clear`` (a reboot
    # does not change the firmware); set it to () for a unit that got the full map
    refused: tuple[AddressRange, ...] = ()

    def clear(self) -> None:
        self.kind = DeviceFault.NONE

    def refuses(self, table: Table, address: int, count: int) -> int | None:
        """The first address of ``address..address+count-1`` in a refused range, or None."""
        end = address + count - 1
        hits = [max(a, address) for t, a, b in self.refused
                if t is table and a <= end and address <= b]
        return min(hits) if hits else None
