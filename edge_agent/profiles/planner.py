"""The read planner: which Modbus read requests cover a device's points in the fewest round trips.

Points are grouped per table into *clusters* (points sharing registers, e.g. the BIT points of one
status register, are read together and never separated). A request is a contiguous run of clusters
whose unmapped gaps are each at most ``max_gap`` registers, whose span fits the protocol cap (125
registers / 2000 bits) and that crosses no remembered *break*. Among all partitions of the clusters
into such runs the planner takes the one with the fewest requests and, among those, the fewest
registers read (a small dynamic programme; a greedy fill is optimal for the count but not for the
registers).

When a device refuses a merged read (typically exception 2, an unmapped register inside the gap),
the poller calls :func:`split` and remembers the returned break so the next :func:`plan` honours it.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass

from edge_agent.errors import ContractError, FrameError, PlanError
from edge_agent.profiles.model import ModbusPoint, Table

MAX_REGISTERS = 125  # Modbus application protocol: read holding/input registers quantity
MAX_BITS = 2000  # read coils / discrete inputs quantity


@dataclass(frozen=True, slots=True)
class ReadRequest:
    table: Table
    address: int
    count: int
    points: tuple[ModbusPoint, ...]

    @property
    def end(self) -> int:
        return self.address + self.count

    def slices(self, regs: Sequence[int]) -> Iterator[tuple[ModbusPoint, Sequence[int]]]:
        """Each point with its own registers cut from this request's response ``regs``."""
        if len(regs) < self.count:
            raise FrameError(f"response has {len(regs)} values, request read {self.count}")
        for p in self.points:
            yield p, regs[p.address - self.address : p.end - self.address]


@dataclass(frozen=True, slots=True)
class _Cluster:
    start: int
    end: int
    points: tuple[ModbusPoint, ...]


def _sort_key(p: ModbusPoint) -> tuple[int, int, str]:
    return (p.address, -p.count, p.name)


def _clusters(points: Sequence[ModbusPoint]) -> list[_Cluster]:
    """Points of one table, sorted, grouped so that overlapping points share a cluster."""
    out: list[_Cluster] = []
    group: list[ModbusPoint] = []
    start = end = 0
    for p in sorted(points, key=_sort_key):
        if p.count < 1:
            raise PlanError(f"point {p.name!r} occupies {p.count} registers")
        if group and p.address < end:
            group.append(p)
            end = max(end, p.end)
            continue
        if group:
            out.append(_Cluster(start, end, tuple(group)))
        group, start, end = [p], p.address, p.end
    if group:
        out.append(_Cluster(start, end, tuple(group)))
    return out


def cap_for(table: Table, max_registers: int = MAX_REGISTERS, max_bits: int = MAX_BITS) -> int:
    return max_bits if table.is_bits else max_registers


def _plan_table(
    table: Table, points: Sequence[ModbusPoint], max_gap: int, cap: int, breaks: list[int]
) -> list[ReadRequest]:
    cl = _clusters(points)
    for c in cl:
        if c.end - c.start > cap:
            names = ", ".join(p.name for p in c.points)
            raise PlanError(
                f"{table.value} {c.start}..{c.end - 1} ({names}) spans {c.end - c.start}, "
                f"more than one request may read ({cap})"
            )
    n = len(cl)
    # joinable[k]: clusters k and k+1 may share a request (gap small enough, no break between)
    joinable = [
        cl[k + 1].start - cl[k].end <= max_gap
        and bisect_right(breaks, cl[k + 1].start) == bisect_left(breaks, cl[k].end)
        for k in range(n - 1)
    ]
    # best[i]: (requests, registers) covering the first i clusters; the last request of that
    # optimum is the run back[i]..i-1. The feasible starts j of a run ending at i-1 form a window
    # lo..i-1 whose lo never moves back, so a monotone deque gives the minimum in O(n) overall.
    best: list[tuple[int, int]] = [(0, 0)] * (n + 1)
    back = [0] * (n + 1)
    window: deque[int] = deque()
    lo = 0

    def key(j: int) -> tuple[int, int]:
        return (best[j][0], best[j][1] - cl[j].start)

    for i in range(1, n + 1):
        last_end = cl[i - 1].end
        if i >= 2 and not joinable[i - 2]:
            lo = i - 1
        while last_end - cl[lo].start > cap:
            lo += 1
        while window and key(window[-1]) >= key(i - 1):
            window.pop()  # equal keys: keep the later start (shorter last request)
        window.append(i - 1)
        while window[0] < lo:
            window.popleft()
        j = window[0]
        best[i], back[i] = (best[j][0] + 1, best[j][1] + last_end - cl[j].start), j
    requests: list[ReadRequest] = []
    i = n
    while i > 0:
        j = back[i]
        pts = tuple(p for c in cl[j:i] for p in c.points)
        requests.append(ReadRequest(table, cl[j].start, cl[i - 1].end - cl[j].start, pts))
        i = j
    requests.reverse()
    return requests


def plan(
    points: Sequence[ModbusPoint],
    *,
    max_gap: int = 8,
    max_registers: int = MAX_REGISTERS,
    max_bits: int = MAX_BITS,
    breaks: Collection[tuple[Table, int]] = (),
) -> list[ReadRequest]:
    """Fewest read requests covering every point exactly once, in (table, address) order.

    ``max_gap`` is the largest run of unmapped registers (or bits) one request may read through
    (0: never read an unmapped address). A break ``(table, addr)`` forbids any request holding
    both an address below ``addr`` and one at or above it (a break inside a point is ignored:
    points are never split). PlanError if a point (or group of overlapping points) is larger
    than one request may read; ContractError for nonsensical caps.
    """
    if max_gap < 0 or max_registers < 1 or max_bits < 1:
        raise ContractError("plan needs max_gap >= 0, max_registers >= 1, max_bits >= 1")
    out: list[ReadRequest] = []
    for table in sorted({p.table for p in points}):
        pts = [p for p in points if p.table is table]
        table_breaks = sorted(a for t, a in breaks if t is table)  # sorted: bisected
        cap = cap_for(table, max_registers, max_bits)
        out.extend(_plan_table(table, pts, max_gap, cap, table_breaks))
    return out


def split(request: ReadRequest) -> tuple[list[ReadRequest], tuple[Table, int]] | None:
    """Split a merged request in two; return the parts and the break to remember.

    The cut goes into the largest unmapped gap between its points (ties: nearest the middle), or,
    with no gap at all, at the point boundary nearest the middle of the request. None if the
    request holds a single point (or only points sharing registers): nothing to split.
    """
    cl = _clusters(request.points)
    if len(cl) < 2:
        return None
    middle = request.address + request.count / 2

    def rank(k: int) -> tuple[int, float, int]:
        gap = cl[k].start - cl[k - 1].end
        return (-gap, abs(cl[k].start - middle), k)

    k = min(range(1, len(cl)), key=rank)
    parts = [
        ReadRequest(
            request.table,
            side[0].start,
            side[-1].end - side[0].start,
            tuple(p for c in side for p in c.points),
        )
        for side in (cl[:k], cl[k:])
    ]
    return parts, (request.table, cl[k].start)


def one_per_point(points: Sequence[ModbusPoint]) -> list[ReadRequest]:
    """The naive plan: one request per point, in (table, address) order."""
    ordered = sorted(points, key=lambda p: (p.table, *_sort_key(p)))
    return [ReadRequest(p.table, p.address, p.count, (p,)) for p in ordered]


def rtu_frame_bytes(table: Table, count: int) -> tuple[int, int]:
    """(request, response) bytes of a Modbus RTU read of ``count`` registers/bits.

    Request: unit, function, start (2), quantity (2), CRC (2) = 8. Response: unit, function, byte
    count, data, CRC (2); data is 2 bytes per register or one bit per coil/input, rounded up.
    """
    if count < 1:
        raise ContractError(f"a read needs count >= 1, got {count}")
    data = (count + 7) // 8 if table.is_bits else 2 * count
    return 8, 5 + data
