"""The node's encoder (node/regmap.py) against the gateway's codec: the registers the node puts
on the wire for a sensor value are exactly ``codec.encode`` of that value, so the gateway's
``codec.decode`` gives it back. Every point of every shipped Modbus profile, then every
type x byte order with hypothesis."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.bus.crc import crc16, with_crc
from edge_agent.errors import CodecError
from edge_agent.profiles import codec
from edge_agent.profiles.load import load_profile
from edge_agent.profiles.model import (
    DataType,
    ModbusPoint,
    Order,
    Profile,
    Protocol,
    Table,
)
from edge_agent.readings import Value
from firmware_bridge import gen
from tests.firmware.conftest import NODE_DIR, PROFILES, load_file

_CRC = load_file(NODE_DIR / "crc16.py", "fw_crc16")  # only needs ``array``

SHIPPED = [load_profile(p) for p in sorted(PROFILES.glob("*.toml"))]
MODBUS = [p for p in SHIPPED if p.protocol is Protocol.MODBUS]
INT_RANGES = {
    DataType.INT16: (-(1 << 15), (1 << 15) - 1),
    DataType.UINT16: (0, (1 << 16) - 1),
    DataType.INT32: (-(1 << 31), (1 << 31) - 1),
    DataType.UINT32: (0, (1 << 32) - 1),
    DataType.INT64: (-(1 << 63), (1 << 63) - 1),
    DataType.UINT64: (0, (1 << 64) - 1),
}


def build_map(regmap: ModuleType, points: tuple[ModbusPoint, ...]) -> Any:
    prof = Profile("t", "v", "m", "generic", Protocol.MODBUS, points)
    return regmap.RegisterMap(tuple(gen.descriptor(p) for p in points), gen.table_spans(prof))


def values_for(p: ModbusPoint) -> st.SearchStrategy[Value]:
    """Engineering values the point can carry exactly (decoded from a raw value)."""
    t = p.type
    if t in (DataType.BOOL, DataType.BIT):
        return st.booleans()
    if t is DataType.ENUM:
        return st.sampled_from([label for _, label in p.enum])
    if t is DataType.STRING:
        chars = st.characters(codec="utf-8", exclude_characters="\x00 ")
        text = st.text(chars, max_size=2 * p.length)
        return text.filter(lambda s: len(s.encode()) <= 2 * p.length)
    if t in (DataType.FLOAT32, DataType.FLOAT64):
        raws = st.floats(width=32 if t is DataType.FLOAT32 else 64, allow_nan=False,
                         allow_infinity=False)
        return raws.map(lambda r: codec.decode(p, codec.raw_encode(t, p.order, r)))
    lo, hi = INT_RANGES[t]
    eng = st.integers(lo, hi).map(lambda r: codec.decode(p, codec.raw_encode(t, p.order, r)))
    return eng.filter(lambda v: _encodable(p, v))  # 64-bit raw + float offset can overflow


def _encodable(p: ModbusPoint, value: Value) -> bool:
    try:
        codec.encode(p, value)
    except CodecError:
        return False
    return True


def assert_same(m: Any, p: ModbusPoint, value: Value) -> None:
    m.set(p.name, value)
    want = codec.encode(p, value)
    if p.type is DataType.BOOL and p.table.is_bits:
        assert m.regs(p.name) == want, (p, value)
    else:
        assert m.regs(p.name) == want, (p, value, [hex(r) for r in want])
    got = codec.decode(p, m.regs(p.name))
    node_view = m.get(p.name)
    if isinstance(value, float):
        assert isinstance(got, float)
        assert math.isclose(got, value, rel_tol=1e-9, abs_tol=1e-12), (p, value, got)
        assert node_view == got
    else:
        assert got == value and node_view == value, (p, value, got, node_view)
        assert type(node_view) is type(got), (p, value, got, node_view)  # 1014, not 1014.0


SHIPPED_POINTS = [(prof, p) for prof in MODBUS for p in prof.modbus_points]


@pytest.mark.parametrize(
    ("profile", "point"), SHIPPED_POINTS, ids=[f"{pr.name}.{p.name}" for pr, p in SHIPPED_POINTS]
)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_every_shipped_point_encodes_like_the_gateway_codec(
    regmap_mod: ModuleType, profile: Profile, point: ModbusPoint, data: st.DataObject
) -> None:
    assert point in profile.modbus_points
    m = build_map(regmap_mod, (point,))
    assert_same(m, point, data.draw(values_for(point)))


def test_shipped_profiles_cover_every_order_and_most_types() -> None:
    used = {(p.type, p.order) for prof in MODBUS for p in prof.modbus_points}
    assert {o for _, o in used} >= {Order.ABCD, Order.CDAB}
    assert len({t for t, _ in used}) >= 8


def synthetic(type_: DataType, order: Order, scale: float, offset: float, bit: int) -> ModbusPoint:
    table = Table.COIL if type_ is DataType.BOOL else Table.HOLDING
    unscaled = type_ in (DataType.BOOL, DataType.BIT, DataType.STRING, DataType.ENUM)
    return ModbusPoint(
        name="p", table=table, address=3, type=type_, order=order,
        scale=1.0 if unscaled else scale, offset=0.0 if unscaled else offset,
        length=5 if type_ is DataType.STRING else 0, bit=bit,
        enum=((0, "off"), (7, "on"), (65535, "max")) if type_ is DataType.ENUM else (),
    )


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(list(DataType)),
    st.sampled_from(list(Order)),
    st.sampled_from([1.0, 0.1, 0.01, 10.0, 0.5, -3.0]),
    st.sampled_from([0.0, -40.0, 2.5, 1000.0]),
    st.integers(0, 15),
    st.data(),
)
def test_every_type_and_order(
    regmap_mod: ModuleType, type_: DataType, order: Order, scale: float, offset: float,
    bit: int, data: st.DataObject,
) -> None:
    p = synthetic(type_, order, scale, offset, bit)
    m = build_map(regmap_mod, (p,))
    assert_same(m, p, data.draw(values_for(p)))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([DataType.INT16, DataType.UINT16, DataType.INT32, DataType.UINT32]),
       st.sampled_from(list(Order)), st.floats(-1e6, 1e6, allow_nan=False))
def test_rounding_of_arbitrary_values_matches(
    regmap_mod: ModuleType, type_: DataType, order: Order, value: float
) -> None:
    """Values between raw steps round half away from zero on both sides; out of range on both
    sides too."""
    p = synthetic(type_, order, 0.1, 0.0, 0)
    m = build_map(regmap_mod, (p,))
    try:
        want = codec.encode(p, value)
    except CodecError:
        with pytest.raises(ValueError, match="point p"):
            m.set("p", value)
        return
    m.set("p", value)
    assert m.regs("p") == want


def test_bits_of_one_register_are_merged(regmap_mod: ModuleType) -> None:
    wm = next(p for p in MODBUS if p.name == "water_meter")
    bits = tuple(p for p in wm.modbus_points if p.type is DataType.BIT)
    assert len(bits) == 3
    m = build_map(regmap_mod, bits)
    for p, v in zip(bits, (True, False, True), strict=True):
        m.set(p.name, v)
    for p, v in zip(bits, (True, False, True), strict=True):
        assert codec.decode(p, m.regs(p.name)) is v
    swapped = tuple(replace(p, order=Order.BADC) for p in bits)
    m2 = build_map(regmap_mod, swapped)
    m2.set("tamper", True)
    assert m2.regs("tamper") == [0x0100]
    assert codec.decode(swapped[0], [0x0100]) is True


@pytest.mark.parametrize(
    ("type_", "value"),
    [(DataType.UINT16, 70000), (DataType.INT16, -40000), (DataType.UINT32, -1),
     (DataType.STRING, "x" * 11), (DataType.ENUM, "nope"), (DataType.INT32, "12"),
     (DataType.INT16, math.inf)],
)
def test_unencodable_values_are_refused_like_the_codec(
    regmap_mod: ModuleType, type_: DataType, value: Value
) -> None:
    p = synthetic(type_, Order.ABCD, 1.0, 0.0, 0)
    if not (type_ is DataType.INT32 and isinstance(value, str)):
        with pytest.raises(CodecError):
            codec.encode(p, value)
    m = build_map(regmap_mod, (p,))
    with pytest.raises(ValueError, match="point p"):
        m.set("p", value)


def test_gen_codes_are_the_node_constants(regmap_mod: ModuleType) -> None:
    for code_map in (gen.TABLE_CODES, gen.TYPE_CODES, gen.ORDER_CODES):
        for key, code in code_map.items():
            assert getattr(regmap_mod, key.name) == code, key
    assert Path(regmap_mod.__file__ or "").name == "regmap.py"


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=0, max_size=256), st.integers(0, 8))
def test_node_crc16_is_the_gateway_crc(data: bytes, start: int) -> None:
    crc_mod = _CRC
    buf = bytearray(b"\x55" * start + data + b"\0\0")
    end = start + len(data)
    assert crc_mod.crc16(buf, start, end) == crc16(data)
    frame = bytearray(data + b"\0\0")
    n = crc_mod.append_crc(frame, len(data))
    assert bytes(frame[:n]) == with_crc(data)
    assert crc_mod.check_crc(frame, n) == (n >= 4)
    if n >= 4:
        frame[0] ^= 0x01
        assert not crc_mod.check_crc(frame, n)
