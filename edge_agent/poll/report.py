"""Report by exception: which readings leave the poller.

A reading is emitted when (first of) its quality or reason changed, its value moved beyond the
point's deadband from the *last reported* value (absolute, or percent of that value), or the
heartbeat elapsed since the last report. Alarm points report every change at once. Points without a
deadband report every change. Non-numeric values (bool, str, enum labels) compare by equality.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from edge_agent.profiles.model import Reporting
from edge_agent.readings import Reading, Value


@dataclass(slots=True)
class _Last:
    value: Value
    quality: str
    reason: str
    mono_ns: int


def _numeric(v: Value) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v)


def moved(last: Value, new: Value, rep: Reporting) -> bool:
    """Has the value changed enough to report, under ``rep``'s deadband / alarm rules?"""
    a, b = _numeric(last), _numeric(new)
    if a is None or b is None or rep.alarm or rep.deadband is None:
        if a is not None and b is not None:
            return a != b and not (math.isnan(a) and math.isnan(b))
        return last != new
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) != math.isnan(b)
    db = rep.deadband
    limit = abs(a) * db.value / 100.0 if db.percent else db.value
    if limit <= 0:
        return a != b
    return abs(b - a) > limit


class ReportFilter:
    """Remembers the last reported reading per (device, point)."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, str], _Last] = {}

    def should_emit(self, reading: Reading, rep: Reporting) -> bool:
        key = (reading.device, reading.point)
        last = self._last.get(key)
        emit = (
            last is None
            or last.quality != reading.quality
            or last.reason != reading.reason
            or (rep.heartbeat_s is not None
                and reading.mono_ns - last.mono_ns >= int(rep.heartbeat_s * 1e9))
            or moved(last.value, reading.value, rep)
        )
        if emit:
            self._last[key] = _Last(
                reading.value, reading.quality, reading.reason, reading.mono_ns
            )
        return emit

    def forget(self, device: str) -> None:
        for key in [k for k in self._last if k[0] == device]:
            del self._last[key]
