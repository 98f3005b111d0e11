"""ProfileDevice: a register image laid out by a device profile over a behaviour model.

Every read advances the model to the clock's ``now()`` and encodes the engineering values of the
points it touches with the profile codec (one source of truth for the wire format). Holding/coil
writes are decoded back and handed to the model. The device applies the faults that change *what*
it answers (STUCK, OUT_OF_RANGE, EXCEPTION); transports apply the ones that change *whether/when*.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from edge_agent.errors import BoundsError, CodecError, ModbusException
from edge_agent.profiles import codec
from edge_agent.profiles.model import DataType, ModbusPoint, Profile, Table
from edge_agent.readings import Value

from ..clock import SimClock
from ..faults import DeviceFault, FaultState
from .behaviour import Behaviour

log = logging.getLogger(__name__)


def _enum_label(point: ModbusPoint, raw: int) -> str | None:
    return next((label for code, label in point.enum if code == raw), None)


def _enum_raw(point: ModbusPoint, value: Value) -> int:
    if isinstance(value, str):
        for code, label in point.enum:
            if label == value:
                return code
        raise BoundsError(f"{point.name}: {value!r} is not one of its enum labels")
    return int(value or 0)


def encode_value(point: ModbusPoint, value: Value) -> list[int]:
    """The codec's encoding of an engineering value (enums may be given as their raw int)."""
    if point.type is DataType.ENUM and isinstance(value, int) and _enum_label(point, value) is None:
        return [value & 0xFFFF]  # a raw code the profile does not know: served as it is
    return codec.encode(point, value)


class ProfileDevice:
    """A SimDevice (see ``base.py``) for any Modbus profile."""

    def __init__(
        self,
        name: str,
        unit_id: int,
        profile: Profile,
        model: Behaviour,
        clock: SimClock,
        *,
        strict: bool | None = None,
    ) -> None:
        self.name = name
        self.unit_id = unit_id
        self.profile = profile
        self.model = model
        self.clock = clock
        self.faults = FaultState()
        self.strict = profile.max_gap == 0 if strict is None else strict
        self.requests = 0
        self._lock = threading.Lock()
        self._frozen: dict[str, Value] | None = None
        self._map: dict[Table, dict[int, list[ModbusPoint]]] = {t: {} for t in Table}
        for p in profile.modbus_points:
            for a in range(p.address, p.end):
                self._map[p.table].setdefault(a, []).append(p)

    def _values(self) -> dict[str, Value]:
        self.model.advance(self.clock.now())
        kind = self.faults.kind
        if kind is DeviceFault.STUCK:
            if self._frozen is None:
                self._frozen = dict(self.model.values)
            return self._frozen
        self._frozen = None
        if kind is DeviceFault.OUT_OF_RANGE:
            out = dict(self.model.values)
            for name in self.model.ranges:
                bad = self.model.out_of_range(name)
                if bad is not None and name in out:
                    out[name] = bad
            return out
        return self.model.values

    def _encode(self, point: ModbusPoint, values: dict[str, Value]) -> list[int]:
        value = values.get(point.name)
        try:
            return encode_value(point, value)
        except CodecError:
            if self.faults.kind is DeviceFault.OUT_OF_RANGE:
                return [0xFFFF] * point.count  # the classic "sensor error" raw value
            raise

    def read(self, table: Table, address: int, count: int) -> list[int]:
        with self._lock:
            self.requests += 1
            if self.faults.kind is DeviceFault.EXCEPTION:
                raise ModbusException(self.faults.exception_code)
            self._refuse(table, address, count)
            amap = self._map[table]
            missing = [a for a in range(address, address + count) if a not in amap]
            if missing and self.strict:
                raise ModbusException(
                    ModbusException.ILLEGAL_DATA_ADDRESS,
                    f"{self.name}: {table} {missing[0]} is not mapped",
                )
            values = self._values()
            encoded: dict[str, list[int]] = {}
            out: list[int] = []
            for a in range(address, address + count):
                reg = 0
                for p in amap.get(a, ()):
                    regs = encoded.get(p.name)
                    if regs is None:
                        regs = encoded[p.name] = self._encode(p, values)
                    reg |= regs[a - p.address]
                out.append(reg)
            return out

    def _refuse(self, table: Table, address: int, count: int) -> None:
        """Exception 2 for a request touching a range this unit's firmware lacks."""
        bad = self.faults.refuses(table, address, count)
        if bad is not None:
            raise ModbusException(
                ModbusException.ILLEGAL_DATA_ADDRESS,
                f"{self.name}: {table} {bad} is not in this unit's firmware",
            )

    def write(self, table: Table, address: int, values: Sequence[int]) -> None:
        if table not in (Table.HOLDING, Table.COIL):
            raise ModbusException(ModbusException.ILLEGAL_FUNCTION, f"cannot write {table}")
        with self._lock:
            self.requests += 1
            if self.faults.kind is DeviceFault.EXCEPTION:
                raise ModbusException(self.faults.exception_code)
            self._refuse(table, address, len(values))
            amap = self._map[table]
            end = address + len(values)
            touched: list[ModbusPoint] = []
            for a in range(address, end):
                points = amap.get(a)
                if not points or not all(p.writable for p in points):
                    raise ModbusException(
                        ModbusException.ILLEGAL_DATA_ADDRESS,
                        f"{self.name}: {table} {a} is not a writable register",
                    )
                touched.extend(p for p in points if p not in touched)
            current = self._values()
            for p in touched:
                regs = self._encode(p, current)
                for a in range(max(address, p.address), min(end, p.end)):
                    regs[a - p.address] = int(values[a - address]) & 0xFFFF
                try:
                    value = codec.check_write(p, codec.decode(p, regs))
                except CodecError as exc:
                    log.info("sim_write_refused device=%s point=%s err=%s", self.name, p.name, exc)
                    raise ModbusException(ModbusException.ILLEGAL_DATA_VALUE, str(exc)) from exc
                if p.type is DataType.ENUM:
                    value = _enum_raw(p, value)
                self.model.write(p.name, value)
                log.debug("sim_write device=%s point=%s value=%s", self.name, p.name, value)

    def reboot(self) -> None:
        """Power cycle: faults cleared, the model's volatile state back to defaults."""
        with self._lock:
            self.faults.clear()
            self._frozen = None
            self.model.reboot()
        log.info("sim_reboot device=%s", self.name)

    def snapshot(self) -> dict[str, Value]:
        """Current engineering values (advanced to now), as the model holds them."""
        with self._lock:
            self.model.advance(self.clock.now())
            return dict(self.model.values)
