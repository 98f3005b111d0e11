"""Codec property tests: encode -> decode round trips for every type x order, and the wire bytes
cross-checked against pymodbus's own converters (ModbusClientMixin.convert_from/to_registers)."""

from __future__ import annotations

import math
from typing import Any, Literal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymodbus.client.mixin import ModbusClientMixin

from edge_agent.profiles.codec import decode, encode, raw_decode, raw_encode
from edge_agent.profiles.model import REGISTER_WIDTH, DataType, ModbusPoint, Order, Table

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
orders = st.sampled_from(list(Order))
words = st.integers(0, 0xFFFF)
INT_RANGES = {
    DataType.INT16: (-(2**15), 2**15 - 1),
    DataType.UINT16: (0, 2**16 - 1),
    DataType.INT32: (-(2**31), 2**31 - 1),
    DataType.UINT32: (0, 2**32 - 1),
    DataType.INT64: (-(2**63), 2**63 - 1),
    DataType.UINT64: (0, 2**64 - 1),
}
DT = ModbusClientMixin.DATATYPE
PYMODBUS_TYPES = {
    DataType.INT16: DT.INT16,
    DataType.UINT16: DT.UINT16,
    DataType.INT32: DT.INT32,
    DataType.UINT32: DT.UINT32,
    DataType.INT64: DT.INT64,
    DataType.UINT64: DT.UINT64,
    DataType.FLOAT32: DT.FLOAT32,
    DataType.FLOAT64: DT.FLOAT64,
}


def point(t: DataType, order: Order, **kw: Any) -> ModbusPoint:
    return ModbusPoint("p", Table.HOLDING, 0, t, order=order, **kw)


def same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return a == b and type(a) is type(b)


@st.composite
def int_case(draw: st.DrawFn) -> tuple[DataType, Order, int]:
    t = draw(st.sampled_from(list(INT_RANGES)))
    lo, hi = INT_RANGES[t]
    return t, draw(orders), draw(st.integers(lo, hi))


@SETTINGS
@given(int_case())
def test_int_round_trip(case: tuple[DataType, Order, int]) -> None:
    t, order, value = case
    regs = raw_encode(t, order, value)
    assert len(regs) == REGISTER_WIDTH[t] and all(0 <= r <= 0xFFFF for r in regs)
    assert same(raw_decode(t, order, regs), value)
    p = point(t, order)
    assert same(decode(p, encode(p, value)), value)


@SETTINGS
@given(st.sampled_from(list(INT_RANGES)), orders, st.data())
def test_int_registers_are_a_bijection(t: DataType, order: Order, data: st.DataObject) -> None:
    regs = data.draw(st.lists(words, min_size=REGISTER_WIDTH[t], max_size=REGISTER_WIDTH[t]))
    p = point(t, order)
    assert encode(p, decode(p, regs)) == regs


@SETTINGS
@given(orders, st.floats(width=32), st.floats())
def test_float_round_trip_incl_nan_inf(order: Order, f32: float, f64: float) -> None:
    for t, value in ((DataType.FLOAT32, f32), (DataType.FLOAT64, f64)):
        p = point(t, order)
        back = decode(p, encode(p, value))
        assert same(back, value), (t, order, value, back)
        assert same(raw_decode(t, order, raw_encode(t, order, value)), value)


@SETTINGS
@given(
    orders,
    st.integers(1, 8),
    st.text(max_size=16),
    st.text(alphabet="\x00 ", max_size=4),
)
def test_string_round_trip_with_padding(order: Order, length: int, text: str, pad: str) -> None:
    value = (text + pad)[: 2 * length]
    if len(value.encode()) > 2 * length:
        value = value.encode()[: 2 * length].decode("utf-8", "ignore")
    p = point(DataType.STRING, order, length=length)
    regs = encode(p, value)
    assert len(regs) == length
    assert decode(p, regs) == value.rstrip("\x00 ")
    assert raw_decode(DataType.STRING, order, regs, length=length) == value.rstrip("\x00 ")


@SETTINGS
@given(orders, st.integers(0, 15), st.booleans(), words)
def test_bit_round_trip_and_position(order: Order, bit: int, value: bool, reg: int) -> None:
    p = point(DataType.BIT, order, bit=bit)
    assert decode(p, encode(p, value)) is value
    # independently: the register as the device means it, then bit ``bit`` (0 = LSB)
    meant = int.from_bytes(reg.to_bytes(2, "little"), "big") if order in ("BADC", "DCBA") else reg
    assert decode(p, [reg]) is bool(meant >> bit & 1)


@SETTINGS
@given(orders, st.dictionaries(st.integers(0, 0xFFFF), st.text(min_size=1), min_size=1), st.data())
def test_enum_round_trip(order: Order, mapping: dict[int, str], data: st.DataObject) -> None:
    enum: dict[int, str] = {}
    for raw, label in mapping.items():  # labels must be unique too
        if label not in enum.values():
            enum[raw] = label
    p = point(DataType.ENUM, order, enum=tuple(enum.items()))
    raw = data.draw(st.sampled_from(sorted(enum)))
    assert decode(p, encode(p, enum[raw])) == enum[raw]
    assert decode(p, encode(p, raw)) == enum[raw]
    assert raw_decode(DataType.ENUM, order, encode(p, raw)) == raw


@SETTINGS
@given(
    st.sampled_from([DataType.INT16, DataType.UINT16, DataType.INT32, DataType.UINT32]),
    orders,
    st.sampled_from([0.1, 0.01, 0.5, 2.0, 10.0, 0.001, 1.0]),
    st.sampled_from([0.0, -40.0, 273.15, 1.0]),
    st.data(),
)
def test_scaled_round_trip(
    t: DataType, order: Order, scale: float, offset: float, data: st.DataObject
) -> None:
    lo, hi = INT_RANGES[t]
    raw = data.draw(st.integers(lo, hi))
    p = point(t, order, scale=scale, offset=offset)
    regs = raw_encode(t, order, raw)
    eng = decode(p, regs)
    assert isinstance(eng, int | float)
    assert math.isclose(eng, raw * scale + offset, rel_tol=1e-12, abs_tol=1e-9)
    assert encode(p, eng) == regs


@SETTINGS
@given(st.sampled_from(list(INT_RANGES)), orders, st.integers(-1000, 1000).filter(bool),
       st.integers(-(2**40), 2**40), st.data())
def test_whole_scaling_of_integers_is_exact_and_int(
    t: DataType, order: Order, scale: int, offset: int, data: st.DataObject
) -> None:
    lo, hi = INT_RANGES[t]
    raw = data.draw(st.integers(lo, hi))
    p = point(t, order, scale=float(scale), offset=float(offset))
    regs = raw_encode(t, order, raw)
    eng = decode(p, regs)
    assert type(eng) is int and eng == raw * scale + offset
    assert encode(p, eng) == regs


# --- cross-check against pymodbus --------------------------------------------------------------


def _pymodbus_view(order: Order, regs: list[int]) -> tuple[list[int], Literal["big", "little"]]:
    """pymodbus knows word order only (bytes big-endian in a word): byte-swapped orders are
    expressed by swapping the bytes of every register first."""
    if order in (Order.BADC, Order.DCBA):
        regs = [((r & 0xFF) << 8) | (r >> 8) for r in regs]
    return regs, ("little" if order in (Order.CDAB, Order.DCBA) else "big")


@SETTINGS
@given(st.sampled_from(list(PYMODBUS_TYPES)), orders, st.data())
def test_decode_matches_pymodbus(t: DataType, order: Order, data: st.DataObject) -> None:
    regs = data.draw(st.lists(words, min_size=REGISTER_WIDTH[t], max_size=REGISTER_WIDTH[t]))
    view, word_order = _pymodbus_view(order, regs)
    theirs = ModbusClientMixin.convert_from_registers(view, PYMODBUS_TYPES[t], word_order)
    assert same(raw_decode(t, order, regs), theirs)


@SETTINGS
@given(int_case())
def test_int_encode_matches_pymodbus(case: tuple[DataType, Order, int]) -> None:
    t, order, value = case
    ours = raw_encode(t, order, value)
    view, word_order = _pymodbus_view(order, ours)
    assert ModbusClientMixin.convert_to_registers(value, PYMODBUS_TYPES[t], word_order) == view


@SETTINGS
@given(orders, st.floats(width=32, allow_nan=False), st.floats(allow_nan=False))
def test_float_encode_matches_pymodbus(order: Order, f32: float, f64: float) -> None:
    for t, value in ((DataType.FLOAT32, f32), (DataType.FLOAT64, f64)):
        view, word_order = _pymodbus_view(order, raw_encode(t, order, value))
        assert ModbusClientMixin.convert_to_registers(value, PYMODBUS_TYPES[t], word_order) == view


@SETTINGS
@given(orders, st.integers(1, 8), st.text(alphabet=st.characters(codec="ascii"), max_size=16))
def test_string_matches_pymodbus(order: Order, length: int, text: str) -> None:
    text = text[: 2 * length].rstrip("\x00 ")
    padded = text.ljust(2 * length, "\x00")
    ours = raw_encode(DataType.STRING, order, text, length=length)
    view, word_order = _pymodbus_view(order, ours)
    assert ModbusClientMixin.convert_to_registers(padded, DT.STRING, word_order) == view
    assert ModbusClientMixin.convert_from_registers(view, DT.STRING, word_order) == text
    assert raw_decode(DataType.STRING, order, ours, length=length) == text


@SETTINGS
@given(words, st.integers(0, 15))
def test_bits_match_pymodbus(reg: int, bit: int) -> None:
    # pymodbus unpacks the register's bytes big-endian, each byte LSB first: its list index of
    # our bit b (0 = LSB of the 16-bit value) is b ^ 8.
    bits = ModbusClientMixin.convert_from_registers([reg], DT.BITS)
    assert isinstance(bits, list)
    assert raw_decode(DataType.BIT, Order.ABCD, [reg], bit=bit) is bool(bits[bit ^ 8])
