"""Which batches to drop when the outbox is over its byte cap, and what the one gap notice of that
drop names. Pure logic, no I/O.

Victims are chosen oldest first by class: non-alarm data batches (a generous chunk per drop, see
``drops.drop_target``), then — only as far as the budget strictly needs — alarm data batches, then
loss notices. Gap notices not yet held for the broker are always taken: each drop makes ONE new
gap notice that names the seqs dropped now *and* everything the notices it replaces named (their
ranges, their own seqs, their counts; a loss notice's readings are carried as ``unsigned``).
So the outbox holds at most one unpublished gap notice, and what it announces is never lost.
Resume notices are never dropped. The named seqs are a list of ranges (``trust.gap``): kept
batches between them (alarms, batches held for the broker) cost a range each, not a notice.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from edge_agent.trust.gap import Range

# (seq, kind, alarm, n_readings, bytes, t_first_ns, t_last_ns) as stored in the batches table
Candidate = tuple[int, str, int, int, int, int, int]
NOTICE_BYTES = 400  # a gap notice naming one range (COSE, header, counts), with room to spare
RANGE_BYTES = 10  # each further range: two CBOR uints


def notice_bytes(ranges: int) -> int:
    """What a gap notice naming ``ranges`` ranges may take."""
    return NOTICE_BYTES + RANGE_BYTES * max(0, ranges - 1)


@dataclass(frozen=True, slots=True)
class Carried:
    """What a stored notice announced, carried into the gap notice that replaces it."""

    ranges: tuple[Range, ...] = ()  # seqs a gap notice named
    readings: int = 0  # readings in them
    unsigned: int = 0  # readings given up before signing (a loss notice's, or carried ones)


@dataclass(frozen=True, slots=True)
class DropPlan:
    """One drop: the batches deleted now and the signed gap notice that announces them."""

    seqs: tuple[int, ...]  # deleted from the outbox now, ascending (data and notices)
    ranges: tuple[Range, ...]  # every seq the new notice names: these and what notices carried
    readings: int  # readings it names: dropped data batches' and carried ones
    unsigned: int  # readings given up before signing, from merged loss and gap notices
    bytes: int  # bytes freed
    t_first_ns: int
    t_last_ns: int
    data: int  # data batches dropped now
    dropped_readings: int  # readings in them
    alarms: int  # alarm batches among them
    notices: int  # notices merged into the new one

    @property
    def first_seq(self) -> int:
        return self.ranges[0][0]

    @property
    def last_seq(self) -> int:
        return self.ranges[-1][1]


class SeqSet:
    """Disjoint, non-adjacent seq ranges, kept sorted; adding merges."""

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []

    def add(self, a: int, b: int) -> None:
        i = bisect_left(self._ends, a - 1)  # first range that ends at or after a - 1
        j = bisect_right(self._starts, b + 1)  # ranges starting at or before b + 1
        if i < j:
            a, b = min(a, self._starts[i]), max(b, self._ends[j - 1])
        self._starts[i:j] = [a]
        self._ends[i:j] = [b]

    def __len__(self) -> int:
        return len(self._starts)

    def ranges(self) -> tuple[Range, ...]:
        return tuple(zip(self._starts, self._ends, strict=True))


class _Victims:
    def __init__(self, carried: Mapping[int, Carried]) -> None:
        self.carried = carried
        self.chosen: list[Candidate] = []
        self.named = SeqSet()
        self.freed = 0

    def add(self, c: Candidate) -> None:
        self.chosen.append(c)
        self.freed += c[4]
        self.named.add(c[0], c[0])
        for a, b in self.carried.get(c[0], Carried()).ranges:
            self.named.add(a, b)

    def enough(self, target: int) -> bool:
        return self.freed >= target + notice_bytes(len(self.named))

    def plan(self) -> DropPlan | None:
        if not self.chosen:
            return None
        data = [c for c in self.chosen if c[1] == "data"]
        carried = [self.carried.get(c[0], Carried()) for c in self.chosen if c[1] != "data"]
        dropped = sum(c[3] for c in data)
        return DropPlan(
            seqs=tuple(sorted(c[0] for c in self.chosen)), ranges=self.named.ranges(),
            readings=dropped + sum(k.readings for k in carried),
            unsigned=sum(k.unsigned for k in carried), bytes=self.freed,
            t_first_ns=min(c[5] for c in self.chosen), t_last_ns=max(c[6] for c in self.chosen),
            data=len(data), dropped_readings=dropped, alarms=sum(1 for c in data if c[2]),
            notices=len(self.chosen) - len(data),
        )  # fmt: skip


def plan_drops(
    candidates: Sequence[Candidate], carried: Mapping[int, Carried], want: int, must: int
) -> tuple[DropPlan | None, int]:
    """Victims freeing ``want`` bytes plus the new notice from non-alarm data batches, oldest
    first (every gap notice among the candidates is merged anyway). Alarm data batches, then loss
    notices, oldest first, are taken only while that cannot free ``must`` bytes. ``carried``:
    what each candidate notice announced. Returns the plan and how far it had to go: 0 ``want``
    was met, 1 every non-alarm batch was taken, 2 everything that may go was."""
    acc = _Victims(carried)
    for c in candidates:
        if c[1] == "gap" and c[0] in carried:
            acc.add(c)
    plain = sorted(c for c in candidates if c[1] == "data" and not c[2])
    rest = sorted(c for c in candidates if c[1] == "data" and c[2])
    rest += sorted(c for c in candidates if c[1] == "loss" and c[0] in carried)
    if acc.freed and acc.enough(want):  # merging the notices alone frees enough
        return acc.plan(), 0
    for c in plain:
        acc.add(c)
        if acc.freed >= want and acc.enough(want):
            return acc.plan(), 0
    for c in rest:
        if acc.enough(must):
            return acc.plan(), 1
        acc.add(c)
    return acc.plan(), 2
