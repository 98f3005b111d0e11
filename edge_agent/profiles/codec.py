"""Register codecs: Modbus registers <-> raw values <-> engineering values of a point.

Two layers:

* ``raw_decode`` / ``raw_encode`` (registers.py) convert between a list of 16-bit registers and
  the *raw* value of a :class:`DataType` in an :class:`Order` (no scaling, enum raw stays an int),
  in the four byte/word orders described there.
* ``decode`` / ``encode`` / ``check_write`` (here) work on a :class:`ModbusPoint`: order, then
  ``engineering = raw * scale + offset``, enum labels, string padding, write bounds. An integer
  type whose scale and offset are both whole numbers decodes to an ``int`` (a ``uint16`` with
  ``offset = 1000`` reads 1014, not 1014.0), computed exactly; otherwise scaled values are
  ``float``.

``decode`` runs for every reading: it compiles one closure per point (precomputed ``struct``
formats) and caches it by point identity.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence

from edge_agent.errors import BoundsError, CodecError
from edge_agent.profiles.model import Bounds, DataType, ModbusPoint
from edge_agent.profiles.registers import (
    FLOAT_TYPES,
    INT_TYPES,
    byte_swapped,
    check_regs,
    decode_string,
    raw_decode,
    raw_encode,
    regs_struct,
    value_struct,
    word_swapped,
)
from edge_agent.readings import Value

__all__ = [
    "FLOAT_TYPES",
    "INT_TYPES",
    "Decoder",
    "Raw",
    "check_write",
    "decode",
    "decoder",
    "encode",
    "integral_scaling",
    "raw_decode",
    "raw_encode",
]

Raw = int | float | str | bool
Decoder = Callable[[Sequence[int]], Value]

_TRUE = frozenset({"1", "true", "on", "yes"})
_FALSE = frozenset({"0", "false", "off", "no"})
_CACHE_MAX = 4096


def _compile_decoder(p: ModbusPoint) -> Decoder:
    where = f"point {p.name!r}"
    order, n, t = p.order, p.count, p.type
    if t is DataType.BOOL:
        bits = p.table.is_bits

        def dec_bool(regs: Sequence[int]) -> Value:
            if len(regs) != 1 or not 0 <= regs[0] <= (1 if bits else 0xFFFF):
                check_regs(where, regs, 1)
                raise CodecError(f"{where}: bit value {regs[0]} is not 0 or 1")
            return regs[0] != 0

        return dec_bool
    if t is DataType.BIT:
        if not 0 <= p.bit <= 15:
            raise CodecError(f"{where}: bit {p.bit} is not in 0..15")
        mask = 1 << (p.bit ^ 8 if byte_swapped(order) else p.bit)

        def dec_bit(regs: Sequence[int]) -> Value:
            if len(regs) != 1 or not 0 <= regs[0] <= 0xFFFF:
                check_regs(where, regs, 1)
            return regs[0] & mask != 0

        return dec_bit
    if t is DataType.STRING:
        if n < 1:
            raise CodecError(f"{where}: string length must be >= 1 register, got {n}")

        spack = regs_struct(order, n).pack
        reverse = word_swapped(order)

        def dec_str(regs: Sequence[int]) -> Value:
            try:
                data = spack(*regs)
            except struct.error:
                check_regs(where, regs, n)
                raise  # pragma: no cover
            data = data[::-1] if reverse else data
            try:
                return data.rstrip(b"\x00 ").decode("utf-8")
            except UnicodeDecodeError:
                return decode_string(where, data)

        return dec_str
    pack = regs_struct(order, n).pack
    unpack = value_struct(t, order).unpack

    def raw_of(regs: Sequence[int]) -> int | float:
        try:
            data = pack(*regs)
        except struct.error:
            check_regs(where, regs, n)
            raise  # pragma: no cover
        value: int | float = unpack(data)[0]
        return value

    if t is DataType.ENUM:
        labels = dict(p.enum)

        def dec_enum(regs: Sequence[int]) -> Value:
            raw = raw_of(regs)
            try:
                return labels[int(raw)]
            except KeyError:
                raise CodecError(f"{where}: raw value {raw} is not in its enum") from None

        return dec_enum
    scale, offset = p.scale, p.offset
    if scale == 1 and offset == 0:
        return raw_of
    if t in INT_TYPES and integral_scaling(scale, offset):
        iscale, ioffset = int(scale), int(offset)

        def dec_int_scaled(regs: Sequence[int]) -> Value:
            return int(raw_of(regs)) * iscale + ioffset

        return dec_int_scaled

    def dec_scaled(regs: Sequence[int]) -> Value:
        return raw_of(regs) * scale + offset

    return dec_scaled


_decoders: dict[int, tuple[ModbusPoint, Decoder]] = {}


def decoder(point: ModbusPoint) -> Decoder:
    """The compiled decoder of ``point`` (cached by identity; points are immutable)."""
    entry = _decoders.get(id(point))
    if entry is None or entry[0] is not point:
        if len(_decoders) >= _CACHE_MAX:
            _decoders.clear()
        entry = (point, _compile_decoder(point))
        _decoders[id(point)] = entry
    return entry[1]


def decode(point: ModbusPoint, regs: Sequence[int]) -> Value:
    """Registers (``point.count`` of them; 0/1 ints for bit tables) -> engineering value.

    NaN/inf floats are returned as they are: judging them is the poller's business.
    """
    entry = _decoders.get(id(point))
    if entry is not None and entry[0] is point:
        return entry[1](regs)
    return decoder(point)(regs)


def integral_scaling(scale: float, offset: float) -> bool:
    """True when ``raw * scale + offset`` of an integer type is an integer for every raw value:
    such points decode to ``int`` (exactly, even for 64-bit raw values), not to ``float``."""
    return float(scale).is_integer() and float(offset).is_integer() and scale != 0


def _round_half_away(x: float) -> int:
    return int(math.copysign(math.floor(abs(x) + 0.5), x))


def _div_round_half_away(num: int, den: int) -> int:
    """``num / den`` rounded half away from zero, in exact integer arithmetic (den != 0)."""
    q = (2 * abs(num) + abs(den)) // (2 * abs(den))
    return -q if (num < 0) != (den < 0) else q


def _coerce(p: ModbusPoint, value: Value) -> Value:
    """Normalise the Python type of a value written to ``p`` (e.g. "12.5" -> 12.5, "on" -> True)."""
    where = f"point {p.name!r}"
    t = p.type
    if value is None:
        raise CodecError(f"{where}: no value given")
    if t is DataType.BOOL or t is DataType.BIT:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return value == 1
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise CodecError(f"{where}: expected a bool, got {value!r}")
    if t is DataType.STRING:
        if not isinstance(value, str):
            raise CodecError(f"{where}: expected a string, got {value!r}")
        return value
    if t is DataType.ENUM:
        labels = dict(p.enum)
        if isinstance(value, str):
            if value in labels.values():
                return value
            try:
                value = int(value.strip())
            except ValueError:
                pass
        if isinstance(value, int) and not isinstance(value, bool) and value in labels:
            return labels[value]
        choices = ", ".join(f"{label!r}={raw}" for raw, label in p.enum)
        raise CodecError(f"{where}: {value!r} is not one of its enum values ({choices})")
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            try:
                return float(text)
            except ValueError:
                raise CodecError(f"{where}: {value!r} is not a number") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CodecError(f"{where}: expected a number, got {value!r}")
    return value


def _raw_of(p: ModbusPoint, value: Value) -> Raw:
    """Engineering value (already coerced) -> raw value of ``p``'s type."""
    t = p.type
    if t is DataType.ENUM:
        return next(raw for raw, label in p.enum if label == value)
    if t in (DataType.BOOL, DataType.BIT, DataType.STRING):
        assert isinstance(value, bool | str)
        return value
    assert isinstance(value, int | float) and not isinstance(value, bool)
    unscaled = p.scale == 1 and p.offset == 0
    if unscaled and isinstance(value, int) and t not in FLOAT_TYPES:
        return value
    if p.scale == 0:
        raise CodecError(f"point {p.name!r}: scale 0 cannot be inverted for a write")
    if isinstance(value, int) and t in INT_TYPES and integral_scaling(p.scale, p.offset):
        return _div_round_half_away(value - int(p.offset), int(p.scale))
    try:
        x = float(value) if unscaled else (value - p.offset) / p.scale
    except OverflowError:
        raise CodecError(f"point {p.name!r}: {value!r} is out of range") from None
    if t in FLOAT_TYPES:
        return x
    if not math.isfinite(x):
        raise CodecError(f"point {p.name!r}: {value!r} cannot be written to a {t.value} register")
    return _round_half_away(x)


def encode(point: ModbusPoint, value: Value) -> list[int]:
    """Engineering value -> registers (the inverse of :func:`decode`).

    Integer types are rounded (half away from zero) after inverse scaling and range-checked; enum
    takes a label or a raw int; a BIT point encodes only its own bit (the caller merges it into the
    register: read-modify-write).
    """
    raw = _raw_of(point, _coerce(point, value))
    try:
        return raw_encode(point.type, point.order, raw, length=point.length, bit=point.bit)
    except CodecError as exc:
        raise CodecError(f"point {point.name!r}: value {value!r}: {exc}") from None


def _check_bounds(p: ModbusPoint, value: Value) -> None:
    check_bounds(p.name, p.bounds, p.type is DataType.ENUM, value)


def check_bounds(name: str, b: Bounds | None, enum: bool, value: Value) -> None:
    """BoundsError when ``value`` (already of the point's type) is outside ``b``: min/max,
    the step grid, an enum's allowed labels. Also used by the CLI to say so before asking."""
    where = f"point {name!r}"
    if b is None:
        return
    if enum:
        if b.allowed and value not in b.allowed:
            raise BoundsError(f"{where}: {value!r} may not be written (allowed: {list(b.allowed)})")
        return
    if not isinstance(value, int | float) or isinstance(value, bool):
        return
    if b.min is not None and value < b.min:
        raise BoundsError(f"{where}: {value!r} is below the minimum {b.min}")
    if b.max is not None and value > b.max:
        raise BoundsError(f"{where}: {value!r} is above the maximum {b.max}")
    if b.step:
        base = b.min if b.min is not None else 0.0
        k = (value - base) / b.step
        if abs(k - round(k)) > 1e-6 * max(1.0, abs(k)):
            raise BoundsError(f"{where}: {value!r} is not a multiple of step {b.step} from {base}")


def check_write(point: ModbusPoint, value: Value) -> Value:
    """Check a write of ``value`` to ``point``; return the value as it will read back.

    CodecError if the point is read-only or the value has the wrong type; BoundsError if it is
    outside min/max, off the step grid, not an allowed enum label, non-finite, or does not fit the
    register type.
    """
    if not point.writable:
        raise CodecError(f"point {point.name!r} is read-only")
    v = _coerce(point, value)
    if isinstance(v, float) and not math.isfinite(v):
        raise BoundsError(f"point {point.name!r}: {v!r} may not be written")
    _check_bounds(point, v)
    try:
        regs = encode(point, v)
    except CodecError as exc:
        raise BoundsError(str(exc)) from None
    return decode(point, regs)
