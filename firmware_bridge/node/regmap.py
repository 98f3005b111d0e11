"""The node's register image, filled from sensor values with the profile's encoding.

A generated map module (``edge-agent firmware gen``) describes every point as a tuple

    (name, table, address, count, type, order, scale, offset, bit, enum, writable)

with the integer codes below. ``RegisterMap.set(name, value)`` turns an engineering value into
the point's registers exactly as the gateway's codec (``edge_agent.profiles.codec.encode``) would,
so the gateway's ``decode`` gives the value back: ``raw = round_half_away((value - offset) /
scale)`` for integer types (exact integer arithmetic, and ``get`` gives an ``int``, when scale and
offset are whole numbers), IEEE754 for floats, UTF-8 NUL-padded strings, enum labels to their raw
value, and the byte order ABCD / DCBA / BADC / CDAB (A = most significant byte).

The Modbus slave serves requests with ``check``, ``read_into`` and ``write_from``; those only
index preallocated ``bytearray``s (no heap allocation). Writes by the master to writable points
are reported to ``on_write(name, value)``.

On ports with single-precision floats (rp2) float64 points and large scaled values are only as
exact as a 32-bit float.
"""

import struct

from micropython import const

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

    Point = tuple[str, int, int, int, int, int, float, float, int, tuple[tuple[int, str], ...], bool]
    Value = bool | int | float | str

# tables
COIL = const(0)
DISCRETE = const(1)
HOLDING = const(2)
INPUT = const(3)
# types
BOOL = const(0)
INT16 = const(1)
UINT16 = const(2)
INT32 = const(3)
UINT32 = const(4)
INT64 = const(5)
UINT64 = const(6)
FLOAT32 = const(7)
FLOAT64 = const(8)
STRING = const(9)
BIT = const(10)
ENUM = const(11)
# byte orders
ABCD = const(0)
DCBA = const(1)
BADC = const(2)
CDAB = const(3)
# Modbus exception codes
ILLEGAL_FUNCTION = const(1)
ILLEGAL_ADDRESS = const(2)
ILLEGAL_VALUE = const(3)
DEVICE_FAILURE = const(4)

_MAPPED = const(1)
_WRITABLE = const(2)
_FAULT = const(4)
_MAX_STRING = const(123)

FORMATS = ("", ">h", ">H", ">i", ">I", ">q", ">Q", ">f", ">d", "", "", ">H")
RANGES = (
    (0, 1),
    (-(1 << 15), (1 << 15) - 1),
    (0, (1 << 16) - 1),
    (-(1 << 31), (1 << 31) - 1),
    (0, (1 << 32) - 1),
    (-(1 << 63), (1 << 63) - 1),
    (0, (1 << 64) - 1),
    (0, 0),
    (0, 0),
    (0, 0),
    (0, 1),
    (0, (1 << 16) - 1),
)


class RegisterMap:
    def __init__(
        self,
        points: "tuple[Point, ...]",
        tables: "tuple[tuple[int, int], ...]",
        strict: bool = False,
    ) -> None:
        """``tables[code] = (first address, count)``; ``strict``: reads of unmapped registers
        are answered with exception 02 (profiles with ``max_gap = 0``)."""
        self.points = points
        self.strict = strict
        self.base = [t[0] for t in tables]
        self.size = [t[1] for t in tables]
        self.store = [bytearray(self.size[i] * (1 if i <= DISCRETE else 2)) for i in range(4)]
        self.flags = [bytearray(self.size[i]) for i in range(4)]
        self.index = {}  # type: dict[str, int]
        self.on_write = None  # type: Callable[[str, Any], None] | None
        self.faulty = 0
        self._bad = {}  # type: dict[str, bool]
        self._scratch = bytearray(2 * _MAX_STRING)
        for i in range(len(points)):
            p = points[i]
            if p[0] in self.index:
                raise ValueError("point %s: defined twice" % p[0])
            self.index[p[0]] = i
            a = p[2] - self.base[p[1]]
            if a < 0 or a + p[3] > self.size[p[1]]:
                raise ValueError("point %s: outside its table" % p[0])
            flags = self.flags[p[1]]
            for k in range(a, a + p[3]):
                flags[k] |= _MAPPED | (_WRITABLE if p[10] else 0)

    def point(self, name: str) -> "Point":
        try:
            return self.points[self.index[name]]
        except KeyError:
            raise KeyError("no point named %s in the register map" % name)

    # -- engineering values <-> registers --------------------------------------------------

    def set(self, name: str, value: "Value") -> None:
        """Put ``value`` into the point's registers (ValueError if it cannot be encoded)."""
        p = self.point(name)
        table, t, n, order = p[1], p[4], p[3], p[5]
        a = p[2] - self.base[table]
        store = self.store[table]
        if t == BOOL:
            v = 1 if value else 0
            if table <= DISCRETE:
                store[a] = v
            else:
                store[2 * a] = 0
                store[2 * a + 1] = v
            return
        if t == BIT:
            idx, mask = _bit_pos(a, p[8], order)
            if value:
                store[idx] |= mask
            else:
                store[idx] &= 0xFF ^ mask
            return
        s = self._scratch
        if t == STRING:
            if not isinstance(value, str):
                raise ValueError("point %s: expected a str" % name)
            data = value.encode()
            if len(data) > 2 * n:
                raise ValueError("point %s: %d bytes do not fit in %d registers" % (name, len(data), n))
            for i in range(2 * n):
                s[i] = data[i] if i < len(data) else 0
        else:
            struct.pack_into(FORMATS[t], s, 0, _raw(p, value))
        _place(s, store, 2 * a, n, order)

    def get(self, name: str) -> "Value":
        """The point's engineering value as the registers hold it now."""
        p = self.point(name)
        table, t, n, order = p[1], p[4], p[3], p[5]
        a = p[2] - self.base[table]
        store = self.store[table]
        if t == BOOL:
            return (store[a] if table <= DISCRETE else store[2 * a] | store[2 * a + 1]) != 0
        if t == BIT:
            idx, mask = _bit_pos(a, p[8], order)
            return store[idx] & mask != 0
        s = self._scratch
        _gather(store, 2 * a, n, order, s)
        if t == STRING:
            return bytes(s[: 2 * n]).rstrip(b"\x00 ").decode()
        raw = struct.unpack_from(FORMATS[t], s, 0)[0]
        if t == ENUM:
            for code, label in p[9]:
                if code == raw:
                    return label
            return int(raw)
        scale, offset = p[6], p[7]
        if scale == 1 and offset == 0:
            return raw  # type: ignore[no-any-return]
        if t <= UINT64 and _whole(scale) and _whole(offset):
            return raw * int(scale) + int(offset)  # type: ignore[no-any-return]
        return raw * scale + offset  # type: ignore[no-any-return]

    def regs(self, name: str) -> "list[int]":
        """The point's registers (or bits) as 16-bit ints, as they go on the wire."""
        p = self.point(name)
        a = p[2] - self.base[p[1]]
        store = self.store[p[1]]
        if p[1] <= DISCRETE:
            return [store[a]]
        return [(store[2 * k] << 8) | store[2 * k + 1] for k in range(a, a + p[3])]

    def fail(self, name: str) -> None:
        """Mark the point's sensor as failed: reads covering it get exception 04."""
        self.point(name)
        self._bad[name] = True
        self._mark_faults()

    def ok(self, name: str) -> None:
        if self._bad.pop(name, False):
            self._mark_faults()

    def _mark_faults(self) -> None:
        for flags in self.flags:
            for k in range(len(flags)):
                flags[k] &= 0xFF ^ _FAULT
        for name in self._bad:
            p = self.point(name)
            a = p[2] - self.base[p[1]]
            flags = self.flags[p[1]]
            for k in range(a, a + p[3]):
                flags[k] |= _FAULT
        self.faulty = len(self._bad)

    # -- serving requests (allocation-free) -------------------------------------------------

    def check(self, table: int, address: int, count: int, write: bool) -> int:
        """0 if the range may be read (written), else the Modbus exception code."""
        a = address - self.base[table]
        if a < 0 or a + count > self.size[table]:
            return ILLEGAL_ADDRESS
        flags = self.flags[table]
        need = _WRITABLE if write else (_MAPPED if self.strict else 0)
        fault = 0
        for k in range(a, a + count):
            f = flags[k]
            if f & need != need:
                return ILLEGAL_ADDRESS
            fault |= f
        if not write and fault & _FAULT:
            return DEVICE_FAILURE
        return 0

    def read_into(self, table: int, address: int, count: int, out: bytearray, pos: int) -> int:
        """Write the response data (registers big-endian, or packed bits) at ``out[pos]``."""
        a = address - self.base[table]
        store = self.store[table]
        if table >= HOLDING:
            for k in range(2 * a, 2 * (a + count)):
                out[pos] = store[k]
                pos += 1
            return pos
        nbytes = (count + 7) >> 3
        for k in range(pos, pos + nbytes):
            out[k] = 0
        for i in range(count):
            if store[a + i]:
                out[pos + (i >> 3)] |= 1 << (i & 7)
        return pos + nbytes

    def write_from(
        self, table: int, address: int, count: int, src: bytearray, pos: int, packed: bool
    ) -> None:
        """Apply a write: registers big-endian from ``src[pos]``; coils packed LSB first
        (``packed``) or one byte per coil."""
        a = address - self.base[table]
        store = self.store[table]
        if table == HOLDING:
            for k in range(2 * count):
                store[2 * a + k] = src[pos + k]
        else:
            for i in range(count):
                bit = (src[pos + (i >> 3)] >> (i & 7)) & 1 if packed else src[pos + i]
                store[a + i] = 1 if bit else 0
        if self.on_write is not None:
            self._notify(table, address, count)

    def _notify(self, table: int, address: int, count: int) -> None:
        hook = self.on_write
        for p in self.points:
            if p[1] == table and p[10] and p[2] < address + count and address < p[2] + p[3]:
                if hook is not None:
                    hook(p[0], self.get(p[0]))


def _bit_pos(a: int, bit: int, order: int) -> "tuple[int, int]":
    """(byte index in the store, mask) of bit ``bit`` of register ``a``."""
    if order == BADC or order == DCBA:
        bit ^= 8
    if bit >= 8:
        return 2 * a, 1 << (bit - 8)
    return 2 * a + 1, 1 << bit


def _place(src: bytearray, store: bytearray, off: int, n: int, order: int) -> None:
    """``src`` holds the value's bytes most significant first; store them in wire order."""
    rev = order == CDAB or order == DCBA
    swap = order == BADC or order == DCBA
    for i in range(n):
        j = 2 * (n - 1 - i) if rev else 2 * i
        if swap:
            store[off + 2 * i] = src[j + 1]
            store[off + 2 * i + 1] = src[j]
        else:
            store[off + 2 * i] = src[j]
            store[off + 2 * i + 1] = src[j + 1]


def _gather(store: bytearray, off: int, n: int, order: int, dst: bytearray) -> None:
    """Inverse of ``_place``."""
    rev = order == CDAB or order == DCBA
    swap = order == BADC or order == DCBA
    for i in range(n):
        j = 2 * (n - 1 - i) if rev else 2 * i
        if swap:
            dst[j + 1] = store[off + 2 * i]
            dst[j] = store[off + 2 * i + 1]
        else:
            dst[j] = store[off + 2 * i]
            dst[j + 1] = store[off + 2 * i + 1]


def _raw(p: "Point", value: "Value") -> "int | float":
    """Engineering value -> raw value of the point's type (the gateway codec's rules)."""
    name, t, scale, offset = p[0], p[4], p[6], p[7]
    if t == ENUM:
        for code, label in p[9]:
            if label == value or (code == value and not isinstance(value, (str, bool))):
                return code
        raise ValueError("point %s: %r is not one of its enum values" % (name, value))
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("point %s: expected a number, got %r" % (name, value))
    floaty = t == FLOAT32 or t == FLOAT64
    if isinstance(value, int) and t <= UINT64 and scale and _whole(scale) and _whole(offset):
        num, den = value - int(offset), int(scale)  # exact, as the codec does
        r = (2 * abs(num) + abs(den)) // (2 * abs(den))
        return _in_range(p, -r if (num < 0) != (den < 0) else r)
    if scale == 1 and offset == 0:
        if floaty:
            return float(value)
        if isinstance(value, int):
            return _in_range(p, value)
        x = float(value)
    else:
        x = (value - offset) / scale
    if floaty:
        return x
    if x - x != 0:  # nan or inf
        raise ValueError("point %s: %r cannot go into an integer register" % (name, value))
    r = int(abs(x) + 0.5)
    return _in_range(p, -r if x < 0 else r)


def _whole(x: float) -> bool:
    """``x`` is a whole number (then integer points scale exactly and read back as ``int``)."""
    return x == int(x)


def _in_range(p: "Point", raw: int) -> int:
    lo, hi = RANGES[p[4]]
    if raw < lo or raw > hi:
        raise ValueError("point %s: raw value %d is outside [%d, %d]" % (p[0], raw, lo, hi))
    return raw
