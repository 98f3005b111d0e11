"""Planner property tests on random register maps: coverage, caps, gaps, breaks, split, and
never worse than Telegraf's ``max_insert`` optimisation (see telegraf_ref.py) or a brute force."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.errors import PlanError
from edge_agent.profiles.model import DataType, ModbusPoint, Table
from edge_agent.profiles.planner import ReadRequest, one_per_point, plan, split
from tests.profiles_codec.telegraf_ref import max_insert

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def a_point(draw: st.DrawFn, index: int, span: int) -> ModbusPoint:
    table = draw(st.sampled_from(list(Table)))
    address = draw(st.integers(0, span))
    if table.is_bits:
        return ModbusPoint(f"p{index}", table, address, DataType.BOOL)
    t = draw(
        st.sampled_from(
            [DataType.UINT16, DataType.FLOAT32, DataType.FLOAT64, DataType.STRING, DataType.BIT]
        )
    )
    length = draw(st.integers(1, 12)) if t is DataType.STRING else 0
    bit = draw(st.integers(0, 15)) if t is DataType.BIT else 0
    return ModbusPoint(f"p{index}", table, address, t, length=length, bit=bit)


@st.composite
def register_map(draw: st.DrawFn, max_points: int = 30, span: int = 300) -> list[ModbusPoint]:
    n = draw(st.integers(0, max_points))
    return [draw(a_point(i, span)) for i in range(n)]


gaps = st.integers(0, 20)
caps = st.sampled_from([8, 16, 40, 125])
breaks_st = st.lists(st.tuples(st.sampled_from(list(Table)), st.integers(0, 320)), max_size=6)


def cap(table: Table, max_registers: int, max_bits: int) -> int:
    return max_bits if table.is_bits else max_registers


def cluster_spans(points: list[ModbusPoint]) -> list[list[int]]:
    """[start, end) of each run of overlapping points (of one table), by address."""
    spans: list[list[int]] = []
    for p in sorted(points, key=lambda p: p.address):
        if spans and p.address < spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], p.end)
        else:
            spans.append([p.address, p.end])
    return spans


def straddles(points: list[ModbusPoint], b: int) -> bool:
    return any(p.address < b < p.end for p in points)


def check_plan(
    points: list[ModbusPoint],
    reqs: list[ReadRequest],
    max_gap: int,
    max_registers: int,
    max_bits: int,
    breaks: list[tuple[Table, int]],
) -> None:
    seen = Counter(id(p) for r in reqs for p in r.points)
    assert seen == Counter(id(p) for p in points), "every point exactly once"
    assert [(r.table, r.address) for r in reqs] == sorted((r.table, r.address) for r in reqs)
    for r in reqs:
        assert r.count <= cap(r.table, max_registers, max_bits)
        assert all(p.table is r.table for p in r.points)
        assert all(r.address <= p.address and p.end <= r.end for p in r.points)
        mapped = {a for p in r.points for a in range(p.address, p.end)}
        assert r.address in mapped and r.end - 1 in mapped, "no unmapped edges"
        run = 0
        for a in range(r.address, r.end):
            run = 0 if a in mapped else run + 1
            assert run <= max_gap, f"{r.table} {a}: {run} unmapped > {max_gap}"
        same_table = [p for p in points if p.table is r.table]
        for t, b in breaks:
            if t is r.table and r.address < b < r.end:
                assert straddles(same_table, b), f"break {b} crossed by {r.address}+{r.count}"


@SETTINGS
@given(register_map(), gaps, caps, st.sampled_from([16, 64, 2000]), breaks_st)
def test_plan_invariants(
    points: list[ModbusPoint],
    max_gap: int,
    max_registers: int,
    max_bits: int,
    breaks: list[tuple[Table, int]],
) -> None:
    big = {
        t
        for t in Table
        for start, end in cluster_spans([p for p in points if p.table is t])
        if end - start > cap(t, max_registers, max_bits)
    }
    if big:
        with pytest.raises(PlanError, match="more than one request may read"):
            plan(points, max_gap=max_gap, max_registers=max_registers, max_bits=max_bits)
    points = [p for p in points if p.table not in big]
    reqs = plan(
        points, max_gap=max_gap, max_registers=max_registers, max_bits=max_bits, breaks=breaks
    )
    check_plan(points, reqs, max_gap, max_registers, max_bits, breaks)
    assert len(reqs) <= len(one_per_point(points))
    again = plan(
        list(reversed(points)),
        max_gap=max_gap,
        max_registers=max_registers,
        max_bits=max_bits,
        breaks=list(reversed(breaks)),
    )
    assert [(r.table, r.address, r.count) for r in again] == [
        (r.table, r.address, r.count) for r in reqs
    ]


def non_overlapping(points: list[ModbusPoint]) -> list[ModbusPoint]:
    out: list[ModbusPoint] = []
    ends: dict[Table, int] = {}
    for p in sorted(points, key=lambda p: (p.table, p.address)):
        if p.address >= ends.get(p.table, 0):
            out.append(p)
            ends[p.table] = p.end
    return out


@SETTINGS
@given(register_map(max_points=40), st.integers(1, 20), caps)
def test_never_more_requests_than_telegraf_max_insert(
    points: list[ModbusPoint], max_gap: int, max_registers: int
) -> None:
    points = [p for p in non_overlapping(points) if p.count <= max_registers]
    ours = plan(points, max_gap=max_gap, max_registers=max_registers)
    theirs = 0
    for table in Table:
        fields = [(p.address, p.count) for p in points if p.table is table]
        theirs += len(max_insert(fields, max_gap, cap(table, max_registers, 2000)))
    assert len(ours) <= theirs


def brute_force(points: list[ModbusPoint], max_gap: int, cap_: int) -> tuple[int, int]:
    """(requests, registers) of the best partition of one table's clusters, by enumeration."""
    spans = cluster_spans(points)
    best = (len(spans) + 1, 0)
    for cuts in itertools.product([False, True], repeat=max(0, len(spans) - 1)):
        runs: list[list[list[int]]] = [[spans[0]]]
        for cut, s in zip(cuts, spans[1:], strict=True):
            if cut:
                runs.append([s])
            else:
                runs[-1].append(s)
        ok = all(
            run[-1][1] - run[0][0] <= cap_
            and all(b[0] - a[1] <= max_gap for a, b in itertools.pairwise(run))
            for run in runs
        )
        if ok:
            best = min(best, (len(runs), sum(run[-1][1] - run[0][0] for run in runs)))
    return best


@SETTINGS
@given(register_map(max_points=9, span=60), gaps, st.sampled_from([6, 10, 20]))
def test_optimal_against_brute_force(
    points: list[ModbusPoint], max_gap: int, max_registers: int
) -> None:
    points = [p for p in points if p.table is Table.HOLDING]
    if not points or any(e - s > max_registers for s, e in cluster_spans(points)):
        return
    reqs = plan(points, max_gap=max_gap, max_registers=max_registers)
    got = (len(reqs), sum(r.count for r in reqs))
    assert got == brute_force(points, max_gap, max_registers)


@SETTINGS
@given(register_map(max_points=25, span=100), gaps)
def test_split_and_remembered_break(points: list[ModbusPoint], max_gap: int) -> None:
    reqs = plan(points, max_gap=max_gap)
    breaks: list[tuple[Table, int]] = []
    for r in reqs:
        starts = {p.address for p in r.points}
        splittable = any(not straddles(list(r.points), a) and a > r.address for a in starts)
        if not splittable:
            continue
        cut = split(r)
        assert cut is not None
        parts, brk = cut
        assert brk[0] is r.table and r.address < brk[1] < r.end
        assert Counter(id(p) for q in parts for p in q.points) == Counter(id(p) for p in r.points)
        left, right = parts
        spans = cluster_spans(list(r.points))
        assert right.address - left.end == max(b[0] - a[1] for a, b in itertools.pairwise(spans))
        assert left.end <= brk[1] <= right.address and r.address <= left.address
        assert right.end <= r.end and left.count + right.count <= r.count
        breaks.append(brk)
    replanned = plan(points, max_gap=max_gap, breaks=breaks)
    check_plan(points, replanned, max_gap, 125, 2000, breaks)
    assert len(reqs) <= len(replanned) <= len(reqs) + len(breaks)
