"""The raw layer of the register codec: 16-bit Modbus registers <-> the raw value of a type.

``raw_decode`` / ``raw_encode`` convert between a list of registers and the *raw* value of a
:class:`DataType` in an :class:`Order`: no scaling, an enum's raw value stays an int, range-checked
against the type. The per-point layer (codec.py: scale/offset, enum labels, write bounds) builds on
this and on the precomputed ``struct`` formats here.

Byte orders (A = most significant byte): ``ABCD`` big-endian words and bytes; ``CDAB`` word order
reversed (low word first), bytes big-endian; ``BADC`` words big-endian, bytes of each word swapped;
``DCBA`` fully little-endian. For one-register types ``ABCD``/``CDAB`` are big-endian and
``BADC``/``DCBA`` byte-swapped. Strings are a run of registers, two bytes each, UTF-8, padded at the
end with NUL or space; ``CDAB``/``DCBA`` reverse the register run, ``BADC``/``DCBA`` swap the bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from functools import lru_cache

from edge_agent.errors import CodecError
from edge_agent.profiles.model import REGISTER_WIDTH, DataType, Order

_CODES: dict[DataType, str] = {
    DataType.INT16: "h",
    DataType.UINT16: "H",
    DataType.INT32: "i",
    DataType.UINT32: "I",
    DataType.INT64: "q",
    DataType.UINT64: "Q",
    DataType.FLOAT32: "f",
    DataType.FLOAT64: "d",
    DataType.ENUM: "H",
}
_INT_RANGES: dict[DataType, tuple[int, int]] = {
    DataType.INT16: (-(1 << 15), (1 << 15) - 1),
    DataType.UINT16: (0, (1 << 16) - 1),
    DataType.INT32: (-(1 << 31), (1 << 31) - 1),
    DataType.UINT32: (0, (1 << 32) - 1),
    DataType.INT64: (-(1 << 63), (1 << 63) - 1),
    DataType.UINT64: (0, (1 << 64) - 1),
    DataType.ENUM: (0, (1 << 16) - 1),
}
FLOAT_TYPES = frozenset({DataType.FLOAT32, DataType.FLOAT64})
INT_TYPES = frozenset(_INT_RANGES) - {DataType.ENUM}


def word_swapped(order: Order) -> bool:
    return order is Order.CDAB or order is Order.DCBA


def byte_swapped(order: Order) -> bool:
    return order is Order.BADC or order is Order.DCBA


@lru_cache(maxsize=256)
def regs_struct(order: Order, n: int) -> struct.Struct:
    """Packs the ``n`` wire registers so that the value's bytes come out MSB-first (ABCD, BADC)
    or LSB-first (CDAB, DCBA): byte order inside a word is flipped exactly when the byte swap and
    the word swap disagree."""
    flip = byte_swapped(order) != word_swapped(order)
    return struct.Struct(("<" if flip else ">") + "H" * n)


@lru_cache(maxsize=64)
def value_struct(type_: DataType, order: Order = Order.ABCD) -> struct.Struct:
    """Unpacks the bytes made by ``regs_struct(order, n)`` into the value."""
    return struct.Struct(("<" if word_swapped(order) else ">") + _CODES[type_])


def _width(type_: DataType, length: int) -> int:
    return length if type_ is DataType.STRING else REGISTER_WIDTH[type_]


def check_regs(where: str, regs: Sequence[int], n: int) -> None:
    if len(regs) != n:
        raise CodecError(f"{where}: expected {n} register(s), got {len(regs)}")
    for i, r in enumerate(regs):
        if not 0 <= r <= 0xFFFF:
            raise CodecError(f"{where}: register {i} value {r} is not a 16-bit word")


def _to_bytes(where: str, order: Order, regs: Sequence[int], n: int) -> bytes:
    """Wire registers -> the value's bytes, most significant first."""
    try:
        data = regs_struct(order, n).pack(*regs)
    except struct.error:
        check_regs(where, regs, n)
        raise  # pragma: no cover - check_regs always raises here
    return data[::-1] if word_swapped(order) else data


def _from_bytes(order: Order, data: bytes, n: int) -> list[int]:
    """The value's bytes, most significant first -> wire registers."""
    return list(regs_struct(order, n).unpack(data[::-1] if word_swapped(order) else data))


def _swap16(order: Order, reg: int) -> int:
    return ((reg & 0xFF) << 8) | (reg >> 8) if byte_swapped(order) else reg


def decode_string(where: str, data: bytes) -> str:
    data = data.rstrip(b"\x00 ")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CodecError(f"{where}: string is not valid UTF-8 at byte offset {exc.start}") from exc


def raw_decode(
    type: DataType,
    order: Order,
    regs: Sequence[int],
    *,
    length: int = 0,
    bit: int = 0,
) -> int | float | str | bool:
    """Registers -> raw value of ``type`` (enum: the raw int; bool: bit tables give 0/1)."""
    where = f"{type.value} {order.value}"
    n = _width(type, length)
    if type is DataType.BOOL or type is DataType.BIT:
        check_regs(where, regs, 1)
        if type is DataType.BOOL:
            return regs[0] != 0
        if not 0 <= bit <= 15:
            raise CodecError(f"{where}: bit {bit} is not in 0..15")
        return (_swap16(order, regs[0]) >> bit) & 1 == 1
    if type is DataType.STRING:
        if n < 1:
            raise CodecError(f"{where}: string length must be >= 1 register, got {n}")
        return decode_string(where, _to_bytes(where, order, regs, n))
    value: int | float = value_struct(type).unpack(_to_bytes(where, order, regs, n))[0]
    return value


def raw_encode(
    type: DataType,
    order: Order,
    raw: int | float | str | bool,
    *,
    length: int = 0,
    bit: int = 0,
) -> list[int]:
    """Raw value -> registers. Range-checked against ``type``; CodecError on anything else."""
    where = f"{type.value} {order.value}"
    if type is DataType.BOOL or type is DataType.BIT:
        if not (isinstance(raw, bool) or (isinstance(raw, int) and raw in (0, 1))):
            raise CodecError(f"{where}: expected a bool, got {raw!r}")
        if type is DataType.BOOL:
            return [int(raw)]
        if not 0 <= bit <= 15:
            raise CodecError(f"{where}: bit {bit} is not in 0..15")
        return [_swap16(order, int(raw) << bit)]
    n = _width(type, length)
    if type is DataType.STRING:
        if not isinstance(raw, str):
            raise CodecError(f"{where}: expected a str, got {raw!r}")
        if n < 1:
            raise CodecError(f"{where}: string length must be >= 1 register, got {n}")
        data = raw.encode("utf-8")
        if len(data) > 2 * n:
            raise CodecError(f"{where}: {len(data)} bytes do not fit in {n} register(s)")
        return _from_bytes(order, data.ljust(2 * n, b"\x00"), n)
    if type in FLOAT_TYPES:
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise CodecError(f"{where}: expected a number, got {raw!r}")
        try:
            data = value_struct(type).pack(float(raw))
        except (OverflowError, struct.error) as exc:
            raise CodecError(f"{where}: {raw!r} is outside the {type.value} range") from exc
        return _from_bytes(order, data, n)
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise CodecError(f"{where}: expected an int, got {raw!r}")
    lo, hi = _INT_RANGES[type]
    if not lo <= raw <= hi:
        raise CodecError(f"{where}: {raw} is outside the {type.value} range [{lo}, {hi}]")
    return _from_bytes(order, value_struct(type).pack(raw), n)
