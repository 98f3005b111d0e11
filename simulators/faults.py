"""Faults a simulated device or endpoint can be put into, switchable at run time.

Transports consult a device's ``FaultState`` on every request. Tests flip faults directly
(in-process); ``edge-sim fault`` flips them through the scenario's control socket.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


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


@dataclass(slots=True)
class FaultState:
    kind: DeviceFault = DeviceFault.NONE
    slow_s: float = 0.5
    exception_code: int = 6
    garbage: bytes = b"\x00\xff\x13\x37"

    def clear(self) -> None:
        self.kind = DeviceFault.NONE
