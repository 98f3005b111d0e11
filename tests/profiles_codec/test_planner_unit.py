"""Planner unit tests: merging, gaps, caps, shared registers, breaks, split, RTU frame sizes."""

from __future__ import annotations

import pytest
from pymodbus.framer.rtu import FramerRTU
from pymodbus.pdu import ModbusPDU
from pymodbus.pdu.bit_message import (
    ReadCoilsRequest,
    ReadCoilsResponse,
    ReadDiscreteInputsRequest,
    ReadDiscreteInputsResponse,
)
from pymodbus.pdu.decoders import DecodePDU
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersRequest,
    ReadHoldingRegistersResponse,
    ReadInputRegistersRequest,
    ReadInputRegistersResponse,
)

from edge_agent.errors import FrameError, PlanError
from edge_agent.profiles.model import DataType, ModbusPoint, Table
from edge_agent.profiles.planner import (
    ReadRequest,
    one_per_point,
    plan,
    rtu_frame_bytes,
    split,
)

H = Table.HOLDING


def must_split(r: ReadRequest) -> tuple[list[ReadRequest], tuple[Table, int]]:
    cut = split(r)
    assert cut is not None
    return cut


def p(name: str, address: int, t: DataType = DataType.UINT16, **kw: int) -> ModbusPoint:
    table = Table.COIL if t is DataType.BOOL else H
    return ModbusPoint(name, table, address, t, **kw)  # type: ignore[arg-type]


def shape(reqs: list[ReadRequest]) -> list[tuple[str, int, int, list[str]]]:
    return [(r.table.value, r.address, r.count, [x.name for x in r.points]) for r in reqs]


def test_merges_neighbours_and_small_gaps() -> None:
    pts = [p("a", 0), p("b", 1, DataType.FLOAT32), p("c", 10), p("d", 30)]
    assert shape(plan(pts, max_gap=8)) == [
        ("holding", 0, 11, ["a", "b", "c"]),
        ("holding", 30, 1, ["d"]),
    ]
    assert shape(plan(pts, max_gap=0)) == [
        ("holding", 0, 3, ["a", "b"]),
        ("holding", 10, 1, ["c"]),
        ("holding", 30, 1, ["d"]),
    ]


def test_bit_points_share_their_register() -> None:
    pts = [p(f"s{b}", 40, DataType.BIT, bit=b) for b in (3, 0, 1)] + [p("x", 41)]
    (req,) = plan(pts, max_gap=0)
    assert (req.address, req.count) == (40, 2)
    assert sorted(x.name for x in req.points) == ["s0", "s1", "s3", "x"]
    assert split(ReadRequest(H, 40, 1, req.points[:3])) is None  # one register: nothing to split


def test_register_cap_and_fewest_registers() -> None:
    # a..c fit in 125 only as (a, b) + (c) or (a) + (b, c); the second reads no gap
    pts = [p("a", 0), p("b", 60, DataType.FLOAT64), p("c", 64, DataType.STRING, length=62)]
    reqs = plan(pts, max_gap=100)
    assert shape(reqs) == [("holding", 0, 1, ["a"]), ("holding", 60, 66, ["b", "c"])]
    assert [r.count for r in plan(pts, max_gap=100, max_registers=62)] == [1, 4, 62]


def test_bits_cap_is_separate() -> None:
    pts = [p(f"c{i}", i * 100, DataType.BOOL) for i in range(41)]  # 0..4000
    reqs = plan(pts, max_gap=200)
    assert len(reqs) == 3 and max(r.count for r in reqs) <= 2000
    assert sum(len(r.points) for r in reqs) == 41
    assert len(plan(pts, max_gap=200, max_bits=4001)) == 1
    assert len(plan(pts, max_gap=200, max_registers=1)) == 3


def test_point_larger_than_a_request_is_an_error() -> None:
    with pytest.raises(PlanError, match=r"holding 0\.\.129 \(long\) spans 130"):
        plan([p("long", 0, DataType.STRING, length=130)])


def test_tables_in_order_and_deterministic() -> None:
    pts = [
        ModbusPoint("i", Table.INPUT, 5, DataType.UINT16),
        p("h", 9),
        ModbusPoint("d", Table.DISCRETE, 2, DataType.BOOL),
        p("c", 1, DataType.BOOL),
    ]
    assert [r.table for r in plan(pts)] == [Table.COIL, Table.DISCRETE, H, Table.INPUT]
    assert plan(pts) == plan(list(reversed(pts)))
    assert [r.points[0].name for r in one_per_point(pts)] == ["c", "d", "h", "i"]


def test_break_is_respected_and_split_finds_the_gap() -> None:
    pts = [p("a", 0), p("b", 1), p("c", 6), p("d", 7), p("e", 9)]
    (merged,) = plan(pts)
    parts, brk = must_split(merged)
    assert brk == (H, 6)  # the largest gap: 2..5
    assert shape(parts) == [("holding", 0, 2, ["a", "b"]), ("holding", 6, 4, ["c", "d", "e"])]
    assert shape(plan(pts, breaks=[brk])) == shape(parts)
    assert shape(plan(pts, breaks=[(H, 3)])) == shape(parts)  # any break in the gap


def test_split_prefers_the_gap_over_the_middle() -> None:
    pts = [p("a", 0), p("b", 3), p("c", 4), p("d", 5), p("e", 6), p("f", 7)]
    parts, brk = must_split(plan(pts)[0])
    assert brk == (H, 3)
    assert [(r.address, r.count) for r in parts] == [(0, 1), (3, 5)]


def test_split_contiguous_at_the_middle() -> None:
    pts = [p(n, i) for i, n in enumerate("abcdef")]
    parts, brk = must_split(plan(pts)[0])
    assert brk == (H, 3)
    assert [(r.address, r.count) for r in parts] == [(0, 3), (3, 3)]


def test_break_inside_a_point_is_ignored() -> None:
    pts = [p("a", 0, DataType.UINT32), p("b", 2)]
    assert shape(plan(pts, breaks=[(H, 1)])) == [("holding", 0, 3, ["a", "b"])]


def test_slices_cut_each_point() -> None:
    pts = [p("a", 10), p("b", 12, DataType.UINT32)]
    (req,) = plan(pts)
    got = {x.name: list(regs) for x, regs in req.slices([1, 2, 3, 4])}
    assert got == {"a": [1], "b": [3, 4]}
    with pytest.raises(FrameError, match="response has 3 values"):
        list(req.slices([1, 2, 3]))


FRAMES: dict[Table, tuple[type[ModbusPDU], type[ModbusPDU]]] = {
    Table.COIL: (ReadCoilsRequest, ReadCoilsResponse),
    Table.DISCRETE: (ReadDiscreteInputsRequest, ReadDiscreteInputsResponse),
    Table.HOLDING: (ReadHoldingRegistersRequest, ReadHoldingRegistersResponse),
    Table.INPUT: (ReadInputRegistersRequest, ReadInputRegistersResponse),
}


@pytest.mark.parametrize("table", list(Table))
@pytest.mark.parametrize("count", [1, 7, 8, 9, 16, 64, 125])
def test_rtu_frame_bytes_match_pymodbus_framer(table: Table, count: int) -> None:
    framer = FramerRTU(DecodePDU(False))
    req_cls, resp_cls = FRAMES[table]
    request = framer.buildFrame(req_cls(dev_id=1, address=100, count=count))
    if table.is_bits:
        response = framer.buildFrame(resp_cls(dev_id=1, bits=[True] * count))
    else:
        response = framer.buildFrame(resp_cls(dev_id=1, registers=[0xABCD] * count))
    assert rtu_frame_bytes(table, count) == (len(request), len(response))
