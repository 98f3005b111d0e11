"""Report by exception: which readings leave the poller.

A reading is emitted when (first of) its quality or reason changed (good → out_of_range → good is
reported at once, whatever the deadband), its value moved beyond the point's deadband from the
*last reported* value (absolute, or percent of that value), or the heartbeat elapsed since the last
report. Alarm points report every change at once. Points without a
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
    if rep.deadband is None or rep.alarm:  # every change: by equality, NaN equal to NaN
        # (for numbers as for the rest: 1 == 1.0, True == 1 — as comparing floats did)
        return last != new and not (last != last and new != new)  # x != x: x is NaN
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
        return self.offer(reading.device, reading.point, reading.value, reading.quality,
                          reading.reason, reading.mono_ns, rep)

    def offer(self, device: str, point: str, value: Value, quality: str, reason: str,
              mono_ns: int, rep: Reporting) -> bool:
        """``should_emit`` for a reading not built yet (the poll loop's hot path)."""
        key = (device, point)
        last = self._last.get(key)
        if last is None:
            self._last[key] = _Last(value, quality, reason, mono_ns)
            return True
        hb = rep.heartbeat_s
        if (
            last.quality == quality
            and last.reason == reason
            and (hb is None or mono_ns - last.mono_ns < int(hb * 1e9))
            # equal values never moved (NaN != NaN falls through to ``moved``)
            and (last.value == value or not moved(last.value, value, rep))
        ):
            return False
        last.value, last.quality, last.reason, last.mono_ns = value, quality, reason, mono_ns
        return True

    def forget(self, device: str) -> None:
        for key in [k for k in self._last if k[0] == device]:
            del self._last[key]
