"""The simulated slaves of an RTU line: what a device answers, and what reaches the wire.

``answer_of`` is a device's answer to a request addressed to it, as its firmware would give it:
an exception for a request it cannot serve (bad function, address, count or value), its model's
registers otherwise, "device failure" when the model itself breaks. ``on_the_wire`` applies the
device's line faults to that answer (bad CRC, truncated, garbage ahead). A broadcast write
(unit 0) reaches every device that is alive; nobody answers it. The line (rtu_line.py) keeps the
timing and the counts.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Protocol

from edge_agent.errors import ModbusException
from edge_agent.profiles.model import Table
from simulators.faults import DeviceFault, FaultState
from simulators.transports.rtu_timing import (
    READ_TABLES,
    WRITE_FCS,
    Request,
    check_request,
    exception_response,
    read_response,
    write_response,
)

log = logging.getLogger("simulators.transports.rtu_line")  # its lines read as the line's


class RtuDevice(Protocol):
    """What the line needs of a simulated device (a subset of simulators.devices.base)."""

    name: str
    unit_id: int
    faults: FaultState

    def read(self, table: Table, address: int, count: int) -> list[int]: ...

    def write(self, table: Table, address: int, values: Sequence[int]) -> None: ...


def broadcast(devices: Iterable[RtuDevice], req: Request) -> None:
    """A broadcast request: a valid write reaches every live device; nobody answers."""
    if req.fc not in WRITE_FCS or check_request(req):
        return
    table = Table.COIL if req.fc in (5, 15) else Table.HOLDING
    for dev in devices:
        if dev.faults.kind is DeviceFault.DEAD:
            continue
        try:
            dev.write(table, req.address, req.values)
        except ModbusException as exc:
            log.debug("rtu_broadcast_refused device=%s code=%d", dev.name, exc.code)


def answer_of(dev: RtuDevice, req: Request, frame: bytes) -> bytes:
    """``dev``'s answer to ``req`` (the request ``frame`` as received), before line faults."""
    faults = dev.faults
    code = check_request(req)
    if code:
        return exception_response(req.unit, req.fc, code)
    if faults.kind is DeviceFault.EXCEPTION:
        return exception_response(req.unit, req.fc, faults.exception_code)
    try:
        if req.fc in READ_TABLES:
            values = dev.read(READ_TABLES[req.fc], req.address, req.count)
            return read_response(req.unit, req.fc, values[: req.count])
        table = Table.COIL if req.fc in (5, 15) else Table.HOLDING
        dev.write(table, req.address, req.values)
        return write_response(req, frame)
    except ModbusException as exc:
        return exception_response(req.unit, req.fc, exc.code)
    except Exception as exc:  # a broken device model answers like broken firmware would
        log.error("rtu_device_failure device=%s %s err=%r", dev.name, req.describe(), exc)
        return exception_response(req.unit, req.fc, ModbusException.DEVICE_FAILURE)


def on_the_wire(answer: bytes, faults: FaultState) -> bytes:
    """``answer`` as the device's line faults put it on the wire."""
    kind = faults.kind
    if kind is DeviceFault.BAD_CRC:
        return answer[:-2] + bytes((answer[-2] ^ 0xFF, answer[-1] ^ 0x5A))
    if kind is DeviceFault.TRUNCATED:
        return answer[: max(1, len(answer) // 2)]
    if kind is DeviceFault.GARBAGE:
        return faults.garbage + answer
    return answer
