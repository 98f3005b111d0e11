"""The write path: bounds-check, encode, write through the bus owner, read back and confirm.

The caller (``Poller.write``) holds the bus slot and the device's lock, so a write is serialised
with that device's polls (and, on a serial line, with every other transaction).

A ``bit`` point shares its register with others: it is written read-modify-write. The confirmed
value is the one read back after the write, decoded like any reading; if it differs from what was
written (the device clamped or ignored it) that is reported, not hidden: the read-back is returned
and a warning logged.
"""

from __future__ import annotations

import logging

from edge_agent.bus.base import ModbusBus
from edge_agent.errors import CodecError
from edge_agent.profiles import codec
from edge_agent.profiles.model import DataType, ModbusPoint
from edge_agent.readings import Value

log = logging.getLogger(__name__)


async def write_point(
    bus: ModbusBus,
    unit: int,
    point: ModbusPoint,
    value: Value,
    *,
    timeout_s: float,
    device: str = "",
) -> Value:
    """Write ``value`` to ``point`` of ``unit``; returns the value read back afterwards.

    Raises CodecError (read-only point, wrong type), BoundsError (outside the profile's bounds)
    before anything is sent; BusError subclasses from the bus owner.
    """
    expected = codec.check_write(point, value)
    regs = codec.encode(point, expected)
    if point.type is DataType.BIT:
        if point.table.is_bits:
            raise CodecError(f"point {point.name!r}: a bit point must live in a register table")
        mask = codec.encode(point, True)[0]
        (current,) = await bus.read(unit, point.table, point.address, 1, timeout_s=timeout_s)
        regs = [(current & ~mask & 0xFFFF) | regs[0]]
    await bus.write(unit, point.table, point.address, regs, timeout_s=timeout_s)
    back = await bus.read(unit, point.table, point.address, point.count, timeout_s=timeout_s)
    confirmed = codec.decode(point, back)
    if confirmed != expected:
        log.warning(
            "write_not_confirmed device=%s point=%s wrote=%r read_back=%r",
            device, point.name, expected, confirmed,
        )
    else:
        log.info("write_confirmed device=%s point=%s value=%r", device, point.name, confirmed)
    return confirmed
