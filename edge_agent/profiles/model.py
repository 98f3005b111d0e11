"""Profile and Point: the in-memory form of device_profiles/*.toml (see docs/profiles.md).

Pure data; loading and validation live in ``profiles.load``, encoding in ``profiles.codec``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Table(enum.StrEnum):
    COIL = "coil"
    DISCRETE = "discrete"
    HOLDING = "holding"
    INPUT = "input"

    @property
    def is_bits(self) -> bool:
        return self in (Table.COIL, Table.DISCRETE)


class DataType(enum.StrEnum):
    BOOL = "bool"  # a coil / discrete input
    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    INT64 = "int64"
    UINT64 = "uint64"
    FLOAT32 = "float32"
    FLOAT64 = "float64"
    STRING = "string"  # ``length`` registers, 2 chars each, padded with NUL or space
    BIT = "bit"  # bit ``bit`` (0 = LSB) of one holding/input register
    ENUM = "enum"  # uint16 raw value mapped through ``enum``


class Order(enum.StrEnum):
    """Byte order inside the value as it appears on the wire, A = most significant byte.

    ABCD big-endian words, big-endian bytes (Modbus default); DCBA fully little-endian;
    BADC byte-swapped words; CDAB word-swapped (common on meters: low word first).
    """

    ABCD = "ABCD"
    DCBA = "DCBA"
    BADC = "BADC"
    CDAB = "CDAB"


class Protocol(enum.StrEnum):
    MODBUS = "modbus"
    AT = "at"


class Access(enum.StrEnum):
    R = "r"
    RW = "rw"


COMPONENT_CLASSES = (
    "street_light",
    "environment",
    "water_meter",
    "manhole_cover",
    "pipe_pressure",
    "nbiot_module",
    "generic",
)

REGISTER_WIDTH: dict[DataType, int] = {
    DataType.BOOL: 1,
    DataType.INT16: 1,
    DataType.UINT16: 1,
    DataType.INT32: 2,
    DataType.UINT32: 2,
    DataType.INT64: 4,
    DataType.UINT64: 4,
    DataType.FLOAT32: 2,
    DataType.FLOAT64: 4,
    DataType.BIT: 1,
    DataType.ENUM: 1,
}


@dataclass(frozen=True, slots=True)
class Bounds:
    """Allowed values for a writable point, in engineering units (after scale/offset)."""

    min: float | None = None
    max: float | None = None
    step: float | None = None
    allowed: tuple[str, ...] = ()  # for enum points: the labels that may be written


@dataclass(frozen=True, slots=True)
class Deadband:
    value: float
    percent: bool = False  # True: relative to the last reported value, in %


@dataclass(frozen=True, slots=True)
class Reporting:
    """Report-by-exception settings shared by Modbus and AT points."""

    interval_s: float = 10.0
    deadband: Deadband | None = None
    heartbeat_s: float | None = None  # report at least this often even without change
    alarm: bool = False  # report every change at once, close the batch


@dataclass(frozen=True, slots=True)
class ModbusPoint:
    name: str
    table: Table
    address: int  # 0-based protocol address
    type: DataType
    order: Order = Order.ABCD
    scale: float = 1.0
    offset: float = 0.0  # engineering = raw * scale + offset
    unit: str = ""
    access: Access = Access.R
    bounds: Bounds | None = None
    reporting: Reporting = field(default_factory=Reporting)
    length: int = 0  # registers, for STRING
    bit: int = 0  # for BIT
    enum: tuple[tuple[int, str], ...] = ()  # for ENUM: (raw, label) pairs
    valid_range: tuple[float, float] | None = None  # read-only numeric: plausible [lo, hi]
    description: str = ""
    precision: int | None = None  # decimals to show; None: the resolution scale implies

    @property
    def count(self) -> int:
        """Registers (or bits, for coil/discrete tables) this point occupies."""
        if self.type is DataType.STRING:
            return self.length
        return REGISTER_WIDTH[self.type]

    @property
    def end(self) -> int:
        """One past the last address used."""
        return self.address + self.count

    @property
    def writable(self) -> bool:
        return self.access is Access.RW


@dataclass(frozen=True, slots=True)
class AtPoint:
    """A value read from an AT-command module.

    ``command`` is sent (e.g. ``AT+CSQ``); the first response line matching ``pattern`` (a regex)
    is taken and group ``group`` (index or name) converted to ``type``.
    """

    name: str
    command: str
    pattern: str
    group: str = "1"
    type: DataType = DataType.INT32
    unit: str = ""
    scale: float = 1.0
    offset: float = 0.0
    enum: tuple[tuple[int, str], ...] = ()
    reporting: Reporting = field(default_factory=Reporting)
    valid_range: tuple[float, float] | None = None  # numeric: plausible [lo, hi]
    description: str = ""
    precision: int | None = None  # decimals to show; None: the resolution scale implies


Point = ModbusPoint | AtPoint


def plausible_range(p: Point) -> tuple[float, float] | None:
    """Where a reading of ``p`` is plausible, in engineering units (after scale/offset, ends
    included): ``valid_range``, or a writable numeric point's ``min``/``max``; None: unchecked."""
    if p.valid_range is not None:
        return p.valid_range
    b = p.bounds if isinstance(p, ModbusPoint) else None
    if b is not None and b.min is not None and b.max is not None:
        return b.min, b.max
    return None


@dataclass(frozen=True, slots=True)
class Profile:
    name: str  # file stem, how configs refer to it
    vendor: str
    model: str
    component_class: str
    protocol: Protocol
    points: tuple[Point, ...]
    order: Order = Order.ABCD
    max_gap: int = 8  # registers of unmapped space a merged read may span
    description: str = ""
    source: str = ""  # file it was loaded from, for error messages

    def point(self, name: str) -> Point:
        for p in self.points:
            if p.name == name:
                return p
        raise KeyError(name)

    @property
    def modbus_points(self) -> tuple[ModbusPoint, ...]:
        return tuple(p for p in self.points if isinstance(p, ModbusPoint))

    @property
    def at_points(self) -> tuple[AtPoint, ...]:
        return tuple(p for p in self.points if isinstance(p, AtPoint))
