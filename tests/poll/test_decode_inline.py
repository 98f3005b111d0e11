"""The poller decodes a plain one-register unsigned point inline (no decoder call, no slice): its
readings must be exactly what the point's compiled decoder and the quality rules give, for every
byte order, scale, offset, plausible range and register value, malformed registers included."""

from __future__ import annotations

import itertools
import random

import pytest

from edge_agent.config.model import DeviceConfig
from edge_agent.errors import CodecError
from edge_agent.platform.clock import ClockProbe
from edge_agent.poll.device_poll import DevicePoller, decoding
from edge_agent.poll.quality import judge
from edge_agent.profiles import codec
from edge_agent.profiles.model import (
    DataType,
    ModbusPoint,
    Order,
    Point,
    Profile,
    Protocol,
    Reporting,
    Table,
    plausible_range,
)
from edge_agent.profiles.planner import ReadRequest
from edge_agent.readings import Quality, Reading, Value
from tests.poll.fakes import FakeBus

SCALINGS = [(1.0, 0.0), (10.0, -5.0), (0.1, 0.0), (0.5, 2.5), (2.0, 0.5), (1, 0)]
RANGES: list[tuple[float, float] | None] = [None, (0.0, 100.0), (-10.0, 40000.0)]
REGISTERS: list[object] = [0, 1, 99, 100, 101, 0x7FFF, 0x8000, 0xFFFF, 0x10000, -1, True]


def expected(p: ModbusPoint, reg: object) -> tuple[Value, Quality, str, type]:
    """The decoder's and the quality rules' verdict, computed the slow way."""
    try:
        value = codec.decode(p, [reg])  # type: ignore[list-item]
    except CodecError:
        return None, Quality.BAD, "decode", type(None)
    q, why = judge(value, plausible_range(p))
    if q is Quality.BAD:
        return None, q, why, type(None)
    return value, q, why, type(value)


@pytest.mark.parametrize("table", [Table.HOLDING, Table.INPUT])
def test_inline_decoding_matches_the_decoder(table: Table) -> None:
    points = tuple(
        ModbusPoint(f"p{i}", table, i, dtype, order=order, scale=scale, offset=offset,
                    valid_range=valid)
        for i, (dtype, order, (scale, offset), valid) in enumerate(itertools.product(
            [DataType.UINT16, DataType.INT16], list(Order), SCALINGS, RANGES))
    )
    prof = Profile("inline", "v", "m", "test", Protocol.MODBUS, points)
    req = ReadRequest(table, 0, len(points), points)
    dev = DeviceConfig("d1", prof.name, "bus", unit_id=1, interval_s=1.0)
    out: list[Reading] = []

    def emit(r: Reading, rep: Reporting) -> None:
        out.append(r)

    dp = DevicePoller(dev, prof, FakeBus("bus"), 0.05, emit, ClockProbe(boot_id="b"),
                      random.Random(1))
    # the fast path is taken where it should be (and only there), else this test proves little
    direct = [d[5] is not None for d in decoding(req)]
    assert direct == [p.type is DataType.UINT16 and p.order is Order.ABCD for p in points]
    for reg in REGISTERS:
        out.clear()
        dp._good(req, [reg] * len(points))  # type: ignore[list-item]
        assert [r.point for r in out] == [p.name for p in points]
        for p, r in zip(points, out, strict=True):
            value, q, why, kind = expected(p, reg)
            got = (r.value, r.quality, r.reason, type(r.value))
            assert got == (value, q, why, kind), (p, reg)


def test_good_values_go_in_one_call_a_request_and_every_reading_in_the_points_order() -> None:
    """With ``offer_good`` (the poller's hot path) a request's GOOD values leave in one call,
    and a BAD or out-of-range value between them does not reorder the readings: the goods
    before it are handed over first."""
    points = tuple(ModbusPoint(f"p{i}", Table.HOLDING, i, DataType.UINT16, valid_range=(0, 100))
                   for i in range(6))
    prof = Profile("order", "v", "m", "test", Protocol.MODBUS, points)
    req = ReadRequest(Table.HOLDING, 0, len(points), points)
    dev = DeviceConfig("d1", prof.name, "bus", unit_id=1, interval_s=1.0)
    seen: list[tuple[str, Quality]] = []
    calls: list[int] = []

    def offer(device: str, p: Point, value: Value, q: Quality, reason: str, mono: int,
              wall: int, synced: bool) -> None:
        seen.append((p.name, q))

    def offer_good(device: str, items: list[tuple[Point, Value]], mono: int, wall: int,
                   synced: bool) -> None:
        calls.append(len(items))
        seen.extend((p.name, Quality.GOOD) for p, _ in items)

    def emit(r: Reading, rep: Reporting) -> None:
        raise AssertionError("offer / offer_good take every reading")

    dp = DevicePoller(dev, prof, FakeBus("bus"), 0.05, emit, ClockProbe(boot_id="b"),
                      random.Random(1), offer=offer, offer_good=offer_good)
    dp._good(req, [1, 2, 3, 4, 5, 6])
    assert calls == [6] and [n for n, _ in seen] == [p.name for p in points]
    seen.clear()
    calls.clear()
    # p2 out of range, p4 not a register value (decode fails): BAD
    dp._good(req, [1, 2, 500, 4, 0x10000, 6])
    assert [n for n, _ in seen] == [p.name for p in points]
    assert [q for _, q in seen] == [Quality.GOOD, Quality.GOOD, Quality.OUT_OF_RANGE,
                                    Quality.GOOD, Quality.BAD, Quality.GOOD]
    assert calls == [2, 1, 1]
