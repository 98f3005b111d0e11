"""The readings of a data batch: the string table and the compact rows (docs/wire-format.md).

``reading_rows`` encodes (hot path: one pass, no per-row allocation beyond the row), and
``decode_readings`` restores every ``Reading`` exactly from a decoded payload map, refusing any
malformed row with ``BadField`` naming the element (``[12][3][4]``: key 12, row 3, element 4).
"""

from __future__ import annotations

from collections.abc import Sequence

from edge_agent.errors import CodecError
from edge_agent.readings import Quality, Reading
from edge_agent.trust.fields import BadField, int_field, typed_field

K_STRINGS = 9
K_BASE_MONO = 10
K_BASE_OFFSET = 11
K_READINGS = 12

# per-reading flags (row element 5)
# The quality code is bits 0-1 plus bit 4 as its third bit (bits 2-3 were taken when code 4
# came): 0 good, 1 stale, 2 bad, 3 out_of_range, 4 unreadable. flags = code & 3 | (code & 4) << 2
F_QUALITY_MASK = 0x13
F_ALARM = 0x04
F_UNSYNCED = 0x08
F_ALL = F_QUALITY_MASK | F_ALARM | F_UNSYNCED
QUALITY_CODE: dict[Quality, int] = {Quality.GOOD: 0, Quality.STALE: 1, Quality.BAD: 2,
                                    Quality.OUT_OF_RANGE: 3, Quality.UNREADABLE: 4}
# the flags' quality bits (flags & F_QUALITY_MASK) of each quality, and back
QUALITY_FLAGS: dict[Quality, int] = {q: c & 3 | (c & 4) << 2 for q, c in QUALITY_CODE.items()}
QUALITY_OF_FLAGS: dict[int, Quality] = {v: k for k, v in QUALITY_FLAGS.items()}

_VALUE_TYPES = (bool, int, float, str, type(None))


def reading_rows(readings: Sequence[Reading]) -> tuple[list[str], int, int, list[list[object]]]:
    """String table, base mono, base offset and the compact rows. Hot path: keep it lean."""
    table: dict[str, int] = {}
    strings: list[str] = []
    if not readings:
        return strings, 0, 0, []
    first = readings[0]
    base_mono = prev_mono = first.mono_ns
    base_off = prev_off = first.ts_ns - first.mono_ns
    rows: list[list[object]] = []
    append = rows.append
    qcode = QUALITY_FLAGS
    get = table.get
    for i, r in enumerate(readings):
        v = r.value
        if type(v) not in _VALUE_TYPES:
            raise CodecError(
                f"reading {i} ({r.device}/{r.point}): value of type {type(v).__name__} "
                "cannot be carried in a batch"
            )
        d = get(r.device)
        if d is None:
            d = table[r.device] = len(strings)
            strings.append(r.device)
        p = get(r.point)
        if p is None:
            p = table[r.point] = len(strings)
            strings.append(r.point)
        u = get(r.unit)
        if u is None:
            u = table[r.unit] = len(strings)
            strings.append(r.unit)
        mono = r.mono_ns
        dt = mono - prev_mono
        off = r.ts_ns - mono
        wadj = off - prev_off
        prev_mono, prev_off = mono, off
        flags = qcode[r.quality]
        if r.alarm:
            flags |= F_ALARM
        if not r.clock_synced:
            flags |= F_UNSYNCED
        reason = r.reason
        if reason:
            x = get(reason)
            if x is None:
                x = table[reason] = len(strings)
                strings.append(reason)
            append([d, p, u, v, dt, flags, wadj, x])
        elif wadj:
            append([d, p, u, v, dt, flags, wadj])
        elif flags:
            append([d, p, u, v, dt, flags])
        else:
            append([d, p, u, v, dt])
    return strings, base_mono, base_off, rows


def decode_readings(m: dict[object, object]) -> tuple[Reading, ...]:
    strings: list[str] = []
    for i, s in enumerate(typed_field(m, K_STRINGS, list)):
        if not isinstance(s, str):
            raise BadField(f"[{K_STRINGS}][{i}]", "string table entry is not text")
        strings.append(s)
    mono = int_field(m, K_BASE_MONO)
    off = int_field(m, K_BASE_OFFSET)
    rows: list[object] = typed_field(m, K_READINGS, list)
    n = len(strings)
    out: list[Reading] = []
    for i, row in enumerate(rows):
        where = f"[{K_READINGS}][{i}]"
        if type(row) is not list or not 5 <= len(row) <= 8:
            raise BadField(where, "reading row must be an array of 5..8 elements")
        d, p, u, v, dt = row[0], row[1], row[2], row[3], row[4]
        for j, ix in enumerate((d, p, u)):
            if type(ix) is not int or not 0 <= ix < n:
                raise BadField(f"{where}[{j}]", f"string index {ix!r} outside table of {n}")
        if type(v) not in _VALUE_TYPES:
            raise BadField(f"{where}[3]", f"value of type {type(v).__name__} not allowed")
        if type(dt) is not int:
            raise BadField(f"{where}[4]", "time delta is not an integer")
        flags = row[5] if len(row) > 5 else 0
        wadj = row[6] if len(row) > 6 else 0
        reason = ""
        if (type(flags) is not int or flags & ~F_ALL
                or (flags & F_QUALITY_MASK) not in QUALITY_OF_FLAGS):
            raise BadField(f"{where}[5]", f"invalid flags {flags!r}")
        if type(wadj) is not int:
            raise BadField(f"{where}[6]", "wall-clock adjustment is not an integer")
        if len(row) > 7:
            x = row[7]
            if type(x) is not int or not 0 <= x < n:
                raise BadField(f"{where}[7]", f"string index {x!r} outside table of {n}")
            reason = strings[x]
        mono += dt
        off += wadj
        out.append(
            Reading(
                device=strings[d], point=strings[p], value=v, unit=strings[u],
                ts_ns=mono + off, mono_ns=mono,
                quality=QUALITY_OF_FLAGS[flags & F_QUALITY_MASK], reason=reason,
                alarm=bool(flags & F_ALARM), clock_synced=not flags & F_UNSYNCED,
            )
        )  # fmt: skip
    return tuple(out)
