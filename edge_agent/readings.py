"""The types every stage shares: a Reading, its Quality and the clock state it was taken under.

Gateways often have no real-time clock. Every reading therefore carries the wall-clock time as the
kernel saw it *and* the monotonic time plus the boot id, together with whether the wall clock was
synchronised. A consumer can correct readings taken before the clock was set: within one boot,
``wall = mono + offset`` where the offset is learnt from any later reading taken while synced.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TypeVar, dataclass_transform

Value = bool | int | float | str | None
_C = TypeVar("_C")


@dataclass_transform(frozen_default=True)
def _record(cls: type[_C]) -> type[_C]:
    """A dataclass that is frozen for the type checker (mypy refuses any assignment to a field)
    but not at run time: a frozen dataclass's ``__init__`` sets every field through
    ``object.__setattr__``, ~2 µs a Reading against ~0.5 — at 40k readings/s 5-10 % of the
    agent's CPU (issue #15). Equal readings still hash equal."""
    return dataclass(slots=True, unsafe_hash=True)(cls)


class Quality(enum.StrEnum):
    GOOD = "good"
    STALE = "stale"  # last known value repeated (e.g. device quarantined)
    BAD = "bad"  # no usable value; ``reason`` says why
    # a value outside the profile's plausible range (valid_range, or min/max of a writable
    # point): the value is carried, ``reason`` is "below" or "above"
    OUT_OF_RANGE = "out_of_range"
    # the device refuses to read this point at all (exception 2, ILLEGAL DATA ADDRESS, to a read
    # of the point alone): its firmware lacks a register the profile declares. No value; reason
    # ``exc:2``. Learnt once and re-probed on the quarantine schedule, not read every cycle
    UNREADABLE = "unreadable"


@dataclass(frozen=True, slots=True)
class ClockState:
    """Wall-clock trust at one instant. ``synced`` comes from adjtimex (see platform.clock)."""

    synced: bool
    boot_id: str


@_record
class Reading:
    device: str
    point: str
    value: Value
    unit: str
    ts_ns: int  # wall clock, time.time_ns(); only trustworthy when clock_synced
    mono_ns: int  # time.monotonic_ns() in this boot
    quality: Quality = Quality.GOOD
    reason: str = ""  # not GOOD: short, machine-readable, e.g. "timeout", "exc:2", "above"
    alarm: bool = False  # point is an alarm point: closes the batch at once
    clock_synced: bool = True
