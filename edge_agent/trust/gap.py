"""The gap notice (batch kind 1): signed batches the outbox had to drop, named by seq.

A gap notice names seqs that were signed and then dropped (outbox full) — and only seqs that never
reached the broker. It names them as a list of disjoint seq ranges, so one notice announces every
run of an outage however the kept batches (alarms, batches held for the broker) split them. When
the outbox has to drop again, the unpublished notices it still holds are dropped too and what they
announced is carried into the new notice (their ranges, their own seqs, their counts): at every
moment the outbox and what the broker acknowledged together account for every seq ever signed.

Two encodings, both read: a notice naming one range with nothing carried from loss notices keeps
the original keys 13/14 (first, last), which every consumer reads; any other uses key 24, a flat
array ``[first1, last1, first2, last2, ...]`` of ascending, disjoint, non-adjacent ranges, and
key 25, readings given up before signing that merged loss notices had announced.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from edge_agent.errors import ContractError
from edge_agent.trust.fields import BadField, int_field

K_FIRST = 13
K_LAST = 14
K_READINGS = 15
K_T_FIRST = 16
K_T_LAST = 17
K_REASON = 18
K_RANGES = 24  # flat array of range bounds (several ranges, or one with key 25)
K_UNSIGNED = 25  # readings announced by loss notices this notice replaces (omitted when 0)

Range = tuple[int, int]


@dataclass(frozen=True, slots=True)
class GapNotice:
    ranges: tuple[Range, ...]  # dropped seqs: ascending, disjoint, non-adjacent, inclusive
    readings: int  # readings lost with the named data batches
    t_first_ns: int  # wall time of the earliest dropped reading
    t_last_ns: int  # wall time of the latest
    reason: str  # e.g. "outbox_full"
    unsigned: int = 0  # readings given up before signing, announced by named loss notices

    @property
    def first_seq(self) -> int:
        return self.ranges[0][0]

    @property
    def last_seq(self) -> int:
        return self.ranges[-1][1]

    @property
    def count(self) -> int:
        """How many seqs it names."""
        return sum(b - a + 1 for a, b in self.ranges)

    def seqs(self) -> Iterator[int]:
        for a, b in self.ranges:
            yield from range(a, b + 1)

    def covers(self, seq: int) -> bool:
        return any(a <= seq <= b for a, b in self.ranges)


def normalize(ranges: Iterable[Range]) -> tuple[Range, ...]:
    """Sorted, merged (overlapping or adjacent ranges joined) ranges."""
    out: list[list[int]] = []
    for a, b in sorted(ranges):
        if a > b:
            raise ContractError(f"range {a}..{b} is empty")
        if out and a <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return tuple((a, b) for a, b in out)


def gap_fields(g: GapNotice, seq: int) -> dict[int, object]:
    """The payload keys of a gap notice at ``seq`` (ContractError when it cannot be one)."""
    if not g.ranges or normalize(g.ranges) != g.ranges:
        raise ContractError(f"gap ranges must be ascending, disjoint, non-adjacent: {g.ranges}")
    if g.ranges[0][0] < 1 or g.ranges[-1][1] >= seq:
        raise ContractError(f"gap {g.first_seq}..{g.last_seq} must lie within used seqs "
                            f"1..{seq - 1}")  # fmt: skip
    if g.readings < 0 or g.unsigned < 0:
        raise ContractError("dropped readings counts must be >= 0")
    m: dict[int, object] = {K_READINGS: g.readings, K_T_FIRST: g.t_first_ns,
                            K_T_LAST: g.t_last_ns, K_REASON: g.reason}  # fmt: skip
    if len(g.ranges) == 1 and not g.unsigned:
        m[K_FIRST], m[K_LAST] = g.ranges[0]
    else:
        m[K_RANGES] = [x for r in g.ranges for x in r]
        if g.unsigned:
            m[K_UNSIGNED] = g.unsigned
    return m


def _ranges(m: dict[object, object], seq: int) -> tuple[Range, ...]:
    if K_RANGES not in m:
        first, last = int_field(m, K_FIRST, minimum=1), int_field(m, K_LAST, minimum=1)
        if not first <= last < seq:
            raise BadField(f"[{K_FIRST}]", f"gap {first}..{last} not before seq {seq}")
        return ((first, last),)
    if K_FIRST in m or K_LAST in m:
        raise BadField(f"[{K_RANGES}]", "ranges and first/last together")
    flat = m[K_RANGES]
    if type(flat) is not list or not flat or len(flat) % 2:
        raise BadField(f"[{K_RANGES}]", "expected a non-empty array of range bounds, in pairs")
    out: list[Range] = []
    prev = 0  # the previous range's last seq: the next one starts past prev + 1
    for i in range(0, len(flat), 2):
        a, b = flat[i], flat[i + 1]
        if type(a) is not int or type(b) is not int:
            raise BadField(f"[{K_RANGES}][{i}]", "range bounds must be integers")
        if not (a >= 1 and (not out or a > prev + 1) and a <= b < seq):
            raise BadField(f"[{K_RANGES}][{i}]", f"range {a}..{b} not ascending, disjoint and "
                              f"before seq {seq}")  # fmt: skip
        out.append((a, b))
        prev = b
    return tuple(out)


def gap_from_map(m: dict[object, object], seq: int) -> GapNotice:
    """Parse the gap keys of a decoded payload map at ``seq`` (BadField naming the key)."""
    reason = m.get(K_REASON)
    if type(reason) is not str:
        raise BadField(f"[{K_REASON}]", f"expected str, got {type(reason).__name__}")
    ranges = _ranges(m, seq)
    t_first, t_last = int_field(m, K_T_FIRST), int_field(m, K_T_LAST)
    unsigned = int_field(m, K_UNSIGNED, minimum=0) if K_UNSIGNED in m else 0
    if K_UNSIGNED in m and (not unsigned or K_RANGES not in m):
        raise BadField(f"[{K_UNSIGNED}]", "present only with ranges, and never 0")
    return GapNotice(ranges, int_field(m, K_READINGS, minimum=0), t_first, t_last, reason, unsigned)


def ranges_of(seqs: Sequence[int]) -> tuple[Range, ...]:
    """The ranges of a set of seqs."""
    return normalize((s, s) for s in seqs)
