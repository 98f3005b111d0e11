"""Codec unit tests: known wire vectors for every order, error messages, write checks."""

from __future__ import annotations

import math
from typing import Any

import pytest

from edge_agent.errors import BoundsError, CodecError
from edge_agent.profiles.codec import check_write, decode, encode, raw_decode, raw_encode
from edge_agent.profiles.model import Access, Bounds, DataType, ModbusPoint, Order, Table

H = Table.HOLDING


def pt(t: DataType, **kw: Any) -> ModbusPoint:
    return ModbusPoint(name=str(kw.pop("name", "p")), table=H, address=0, type=t, **kw)


# float32 1.0 is 0x3F800000: bytes A=3F B=80 C=00 D=00
FLOAT_ONE = {
    Order.ABCD: [0x3F80, 0x0000],
    Order.CDAB: [0x0000, 0x3F80],
    Order.BADC: [0x803F, 0x0000],
    Order.DCBA: [0x0000, 0x803F],
}
# uint64 0x0102030405060708
U64 = {
    Order.ABCD: [0x0102, 0x0304, 0x0506, 0x0708],
    Order.CDAB: [0x0708, 0x0506, 0x0304, 0x0102],
    Order.BADC: [0x0201, 0x0403, 0x0605, 0x0807],
    Order.DCBA: [0x0807, 0x0605, 0x0403, 0x0201],
}


@pytest.mark.parametrize("order", list(Order))
def test_float32_one_in_every_order(order: Order) -> None:
    assert raw_decode(DataType.FLOAT32, order, FLOAT_ONE[order]) == 1.0
    assert raw_encode(DataType.FLOAT32, order, 1.0) == FLOAT_ONE[order]


@pytest.mark.parametrize("order", list(Order))
def test_uint64_in_every_order(order: Order) -> None:
    assert raw_decode(DataType.UINT64, order, U64[order]) == 0x0102030405060708
    assert raw_encode(DataType.UINT64, order, 0x0102030405060708) == U64[order]


@pytest.mark.parametrize(
    ("order", "expected"),
    [(Order.ABCD, 0x1234), (Order.CDAB, 0x1234), (Order.BADC, 0x3412), (Order.DCBA, 0x3412)],
)
def test_one_register_orders(order: Order, expected: int) -> None:
    assert raw_decode(DataType.UINT16, order, [0x1234]) == expected
    assert raw_decode(DataType.INT16, order, [0xFFFE]) == (-2 if expected == 0x1234 else -257)


def test_scaled_int_and_offset() -> None:
    p = pt(DataType.INT16, scale=0.1, offset=-40.0)
    assert decode(p, [0xFFFF]) == pytest.approx(-40.1)
    assert encode(p, -40.1) == [0xFFFF]
    half = pt(DataType.INT16, scale=0.5)
    assert encode(half, 1.25) == [3]  # 2.5 rounds half away from zero (not to even)
    assert encode(half, -1.25) == [0xFFFD]


def test_unscaled_int_stays_int_and_large_ints_are_exact() -> None:
    p = pt(DataType.INT64)
    v = decode(p, encode(p, -(2**63) + 1))
    assert v == -(2**63) + 1 and type(v) is int
    assert type(decode(pt(DataType.UINT16, scale=0.5), [3])) is float
    assert decode(pt(DataType.UINT16, scale=2.0), [3]) == 6  # whole scale: int (see below)


def test_float_nan_and_inf_pass_through() -> None:
    p = pt(DataType.FLOAT32)
    assert math.isnan(float(decode(p, [0x7FC0, 0]) or 0))
    assert decode(p, [0xFF80, 0]) == -math.inf


def test_string_padding_and_orders() -> None:
    p = pt(DataType.STRING, length=3)
    assert encode(p, "AB") == [0x4142, 0, 0]
    assert decode(p, [0x4142, 0x4320, 0x2000]) == "ABC"
    assert raw_decode(DataType.STRING, Order.ABCD, [0x4142, 0x4320, 0x2000], length=3) == "ABC"
    swapped = pt(DataType.STRING, length=2, order=Order.BADC)
    assert encode(swapped, "ABC") == [0x4241, 0x0043]
    assert decode(swapped, [0x4241, 0x0043]) == "ABC"


def test_string_errors_name_point_and_offset() -> None:
    p = pt(DataType.STRING, length=2, name="serial")
    with pytest.raises(CodecError, match=r"'serial'.*UTF-8 at byte offset 1"):
        decode(p, [0x41FF, 0x4100])
    with pytest.raises(CodecError, match=r"'serial'.*do not fit in 2"):
        encode(p, "ABCDE")


def test_bits_in_register() -> None:
    regs = [0b1000_0000_0000_0101]
    got = [decode(pt(DataType.BIT, bit=b), regs) for b in range(16)]
    assert [i for i, v in enumerate(got) if v] == [0, 2, 15]
    assert decode(pt(DataType.BIT, bit=8, order=Order.BADC), [0x0001]) is True
    assert encode(pt(DataType.BIT, bit=3), True) == [8]


def test_bool_on_bit_table() -> None:
    coil = ModbusPoint("c", Table.COIL, 0, DataType.BOOL)
    assert decode(coil, [1]) is True and decode(coil, [0]) is False
    with pytest.raises(CodecError, match="not 0 or 1"):
        decode(coil, [2])
    assert encode(coil, "on") == [1]


def test_enum_labels_and_unknown_raw() -> None:
    p = pt(DataType.ENUM, name="mode", enum=((0, "off"), (1, "on"), (7, "auto")))
    assert decode(p, [7]) == "auto"
    assert encode(p, "on") == [1] and encode(p, 7) == [7] and encode(p, "0") == [0]
    with pytest.raises(CodecError, match=r"'mode'.*raw value 3"):
        decode(p, [3])
    with pytest.raises(CodecError, match=r"'dim'.*enum values"):
        encode(pt(DataType.ENUM, name="dim", enum=((0, "off"),)), "bright")


@pytest.mark.parametrize(
    ("regs", "msg"),
    [([1], r"expected 2 register\(s\), got 1"), ([1, 70000], "register 1 value 70000")],
)
def test_bad_register_input(regs: list[int], msg: str) -> None:
    with pytest.raises(CodecError, match=msg):
        decode(pt(DataType.UINT32, name="energy"), regs)


def test_encode_range_errors() -> None:
    with pytest.raises(CodecError, match=r"'p'.*outside the int16 range"):
        encode(pt(DataType.INT16), 40000)
    with pytest.raises(CodecError, match="outside the float32 range"):
        encode(pt(DataType.FLOAT32), 1e39)
    with pytest.raises(CodecError, match="expected a number"):
        encode(pt(DataType.INT16), True)
    with pytest.raises(CodecError, match="not a number"):
        encode(pt(DataType.INT16), "ten")


def test_check_write_bounds_step_allowed() -> None:
    dim = pt(DataType.UINT16, name="dim", access=Access.RW, bounds=Bounds(0, 100, 5))
    assert check_write(dim, "35") == 35
    with pytest.raises(BoundsError, match=r"'dim'.*above the maximum 100"):
        check_write(dim, 105)
    with pytest.raises(BoundsError, match=r"'dim'.*below the minimum 0"):
        check_write(dim, -5)
    with pytest.raises(BoundsError, match="not a multiple of step 5"):
        check_write(dim, 33)
    with pytest.raises(BoundsError):
        check_write(dim, math.nan)
    mode = pt(
        DataType.ENUM,
        access=Access.RW,
        enum=((0, "off"), (1, "on"), (2, "test")),
        bounds=Bounds(allowed=("off", "on")),
    )
    assert check_write(mode, 1) == "on"
    with pytest.raises(BoundsError, match="may not be written"):
        check_write(mode, "test")


def test_check_write_returns_value_as_read_back() -> None:
    sp = pt(DataType.INT16, access=Access.RW, scale=0.5)
    assert check_write(sp, 10.2) == 10.0
    with pytest.raises(BoundsError, match="outside the int16 range"):
        check_write(sp, 1e6)


def test_check_write_read_only() -> None:
    with pytest.raises(CodecError, match="'p' is read-only") as info:
        check_write(pt(DataType.UINT16), 1)
    assert not isinstance(info.value, BoundsError)


# --- integer points with whole-number scale / offset stay integers -----------------------------


@pytest.mark.parametrize(
    ("t", "scale", "offset", "regs", "want"),
    [
        (DataType.UINT16, 1.0, 1000.0, [14], 1014),  # e.g. a pressure in hPa stored as hPa - 1000
        (DataType.INT16, 10.0, 0.0, [0xFFFE], -20),
        (DataType.UINT32, -1.0, 5.0, [0, 7], -2),
        (DataType.UINT64, 2.0, 1.0, [0xFFFF] * 4, 2 * (2**64 - 1) + 1),  # exact past 2**53
    ],
)
def test_integer_type_with_whole_scale_and_offset_decodes_to_int(
    t: DataType, scale: float, offset: float, regs: list[int], want: int
) -> None:
    p = pt(t, scale=scale, offset=offset)
    got = decode(p, regs)
    assert type(got) is int and got == want
    assert encode(p, want) == regs  # exact inverse, no float rounding on the way back


@pytest.mark.parametrize(
    ("t", "scale", "offset"),
    [(DataType.UINT16, 0.1, 0.0), (DataType.UINT16, 1.0, 0.5), (DataType.FLOAT32, 1.0, 1000.0)],
)
def test_fractional_scaling_or_float_types_decode_to_float(
    t: DataType, scale: float, offset: float
) -> None:
    p = pt(t, scale=scale, offset=offset)
    assert type(decode(p, encode(p, 14))) is float


def test_write_to_integer_offset_point_reads_back_as_int() -> None:
    p = pt(DataType.UINT16, offset=1000.0, access=Access.RW, bounds=Bounds(min=1000, max=2000))
    assert check_write(p, 1014) == 1014 and type(check_write(p, "1014")) is int
    assert encode(p, 1014.4) == [14] and encode(p, 1014.5) == [15]
    with pytest.raises(BoundsError):
        check_write(p, 999)
