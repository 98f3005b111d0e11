"""Report by exception: which readings leave the poller.

A reading is emitted when (first of) its quality or reason changed (good → out_of_range → good is
reported at once, whatever the deadband), its value moved beyond the point's deadband from the
*last reported* value (absolute, or percent of that value), or the heartbeat elapsed since the last
report. Alarm points report every change at once. Points without a
deadband report every change. Non-numeric values (bool, str, enum labels) compare by equality.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from edge_agent.profiles.model import Point, Reporting
from edge_agent.readings import Quality, Reading, Value

_GOOD = Quality.GOOD


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


class _Noted(tuple):  # type: ignore[type-arg]
    """A point's last reported reading that was not GOOD without a reason: (value, quality,
    reason) in its value's place (a GOOD one is the value alone)."""

    __slots__ = ()


# a point of an adopted record (``ReportFilter.adopt``) not reported yet: noted, with a quality
# nothing equals, so its first reading passes whatever it is (and the hot path tests nothing more)
NEVER = _Noted((None, object(), ""))


class _Unreported:
    """The first slot of an adopted record nothing was reported from yet: it knows no point
    (``get``, as an index map) and holds the index map the record gets at its first report."""

    __slots__ = ("index",)

    def __init__(self, index: dict[str, int]) -> None:
        self.index = index

    def get(self, point: str) -> None:
        return None


def record(names: Sequence[str], unset: object) -> tuple[dict[str, int], list[Any]]:
    """A device's record of its points ``names``, to share with the poller's filter (``adopt``):
    one list ``[index, good, good, ..., value, mono_ns, value, mono_ns, ...]``: the device's last
    GOOD values (``unset`` until there is one), then, from its first report, what the filter
    remembers of each point (its last report and that report's time), so a device of a poller
    has one list for both. Returns the GOOD values' places by point name (shared) and the
    record (the filter's slots follow at the first report: before, the list is the GOOD values
    alone and its index slot an ``_Unreported``)."""
    n = len(names)
    places = {name: 1 + k for k, name in enumerate(names)}
    index = {name: 1 + n + 2 * k for k, name in enumerate(names)}
    return places, [_Unreported(index), *[unset] * n]


class ReportFilter:
    """Remembers the last reported reading per (device, point).

    Compactly, as a thousand devices' eight thousand points are held for ever: per device one
    flat list ``[index, value, mono_ns, value, mono_ns, ...]`` (two slots a point, 16 bytes),
    where ``index`` maps a point name to its first slot. A reading GOOD without a reason (nearly
    all of them) is its value alone; any other is a ``_Noted`` (value, quality, reason) in the
    value's place. The list is exactly as long as its points need (no room to grow: a device's
    points are all seen in its first polls). Index maps are shared by every device whose points
    were first seen in the same order (the devices of one profile), so a device costs its list
    and nothing else. A poller's device brings its own list instead (``record``, ``adopt``):
    the filter's slots of each point sit next to the device's last GOOD values, in one list
    the poller passes with each of the device's readings (``rec=``).
    """

    def __init__(self) -> None:
        self._last: dict[str, list[Any]] = {}
        # the shared index maps: of a first point; of a map grown by one point
        self._roots: dict[str, dict[str, int]] = {}
        self._grown: dict[tuple[int, str], dict[str, int]] = {}
        # the index maps of adopted records (and of maps grown from them), by id (kept): such a
        # record is its device's too, so it grows in place
        self._adopted: dict[int, dict[str, int]] = {}

    def adopt(self, rec: list[Any]) -> None:
        """Take ``rec`` (from ``record``: a device's own list, with its last GOOD values, nothing
        reported yet) as where a device's reports are kept: its callers pass it (``rec=``) with
        each of the device's readings instead of the device's name being looked up, and the
        filter holds nothing of the device (no list, no entry in its table of devices)."""
        first: _Unreported = rec[0]
        self._adopted[id(first.index)] = first.index

    def should_emit(self, reading: Reading, rep: Reporting, rec: list[Any] | None = None) -> bool:
        """Does ``reading`` report? (``rec``: its device's adopted record, see ``adopt``.)"""
        return self.offer(reading.device, reading.point, reading.value, reading.quality,
                          reading.reason, reading.mono_ns, rep, rec)

    def offer(self, device: str, point: str, value: Value, quality: str, reason: str,
              mono_ns: int, rep: Reporting, rec: list[Any] | None = None) -> bool:
        """``should_emit`` for a reading not built yet (the poll loop's hot path)."""
        last = self._last.get(device) if rec is None else rec
        if last is None or (i := last[0].get(point)) is None:
            self._first(device, last, point, value, quality, reason, mono_ns)
            return True
        hb = rep.heartbeat_s
        plain = quality == _GOOD and not reason
        old = last[i]
        if old.__class__ is _Noted:
            same = not plain and old[1] == quality and old[2] == reason
            old = old[0]
        else:
            same = plain
        if (
            same
            and (hb is None or mono_ns - last[i + 1] < int(hb * 1e9))
            # equal values never moved (NaN != NaN falls through to ``moved``)
            and (old == value or not moved(old, value, rep))
        ):
            return False
        last[i] = value if plain else _Noted((value, quality, reason))
        last[i + 1] = mono_ns
        return True

    def offer_good(self, device: str, items: list[tuple[Point, Value]],
                   mono_ns: int, rec: list[Any] | None = None) -> list[tuple[Point, Value]]:
        """``offer`` for a request's GOOD values at once (quality GOOD, no reason, one time):
        the items that pass, in order. One call a request instead of one a reading (the poll
        loop's hottest path, issue #15); decides exactly as ``offer`` item by item."""
        out: list[tuple[Point, Value]] = []
        last = self._last.get(device) if rec is None else rec
        for item in items:
            p, value = item
            if last is None or (i := last[0].get(p.name)) is None:
                last = self._first(device, last, p.name, value, _GOOD, "", mono_ns)
                out.append(item)
                continue
            lv = last[i]
            if lv.__class__ is not _Noted:  # the last one was GOOD without a reason too
                rep = p.reporting
                hb = rep.heartbeat_s
                if hb is None or mono_ns - last[i + 1] < int(hb * 1e9):
                    if lv == value:
                        continue
                    if rep.deadband is None or rep.alarm:  # ``moved``'s any-change rule
                        if lv != lv and value != value:  # NaN equal to NaN
                            continue
                    elif not moved(lv, value, rep):
                        continue
            last[i] = value
            last[i + 1] = mono_ns
            out.append(item)
        return out

    def _first(self, device: str, last: list[Any] | None, point: str, value: Value,
               quality: str, reason: str, mono_ns: int) -> list[Any]:
        """A point's first reading: its two slots (in a new list of exactly the length
        needed, or in place in an adopted record), and the device's index map with it; the
        device's list. No tuple of the slots or the names on the
        way: tuples of up to 20 items outlive their use in CPython's free lists (a lamp's
        twentieth slot, 100 KiB for the district's 500 lamps)."""
        noted = value if quality == _GOOD and not reason else _Noted((value, quality, reason))
        if last is None:
            index = self._roots.get(point)
            if index is None:
                index = self._roots[point] = {point: 1}
            last = self._last[device] = [index, noted, mono_ns]
            return last
        prev: dict[str, int]
        first = last[0]
        if first.__class__ is _Unreported:  # an adopted record's first report: its slots (after
            # the GOOD values, added at once: CPython then allocates what they need, near exact)
            prev = first.index
            last += [NEVER, 0] * len(prev)
            last[0] = prev
            i = prev.get(point)
            if i is not None:
                last[i] = noted
                last[i + 1] = mono_ns
                return last
        else:
            prev = first
        key = (id(prev), point)  # (every index map is kept: its id stays its own)
        adopted = id(prev) in self._adopted
        index = self._grown.get(key)
        if index is None:
            index = self._grown[key] = {**prev, point: len(last)}
            if adopted:
                self._adopted[id(index)] = index
        if adopted:  # the device's list too (a point not in its profile: never, in a poller)
            last += (noted, mono_ns)
            last[0] = index
            return last
        grown = last + [noted, mono_ns]  # noqa: RUF005  # exactly as long (``[*a, b]`` is not)
        grown[0] = index
        self._last[device] = grown
        return grown

    def forget(self, device: str, rec: list[Any] | None = None) -> None:
        """Forget what ``device`` reported (its next readings all report); an adopted record
        (``rec``) stays the device's, its reports forgotten in place."""
        if rec is None:
            self._last.pop(device, None)
            return
        first = rec[0]
        if id(first) in self._adopted:  # (an _Unreported: nothing reported yet)
            for i in first.values():
                rec[i] = NEVER
                rec[i + 1] = 0
