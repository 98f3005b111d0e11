"""Raw register access for commissioning (``edge-agent modbus read|write``, ``scan``): the checks
a request must pass before it goes on any line, shared by the daemon's op and the CLI's direct
path, and the one function that runs a request on a bus owner.

Errors: ``CommandRefused("bad_argument", ...)`` for a request no device could answer (unit id,
address range, count, values); the bus owner's ``BusError`` family for the transaction.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from edge_agent.bus.base import ModbusBus
from edge_agent.bus.pdu import MAX_READ_BITS, MAX_READ_REGS, MAX_WRITE_BITS, MAX_WRITE_REGS
from edge_agent.errors import CommandRefused, ModbusException
from edge_agent.profiles.model import Table

TABLE_ALIASES = {"hr": "holding", "ir": "input", "co": "coil", "di": "discrete",
                 "holding_register": "holding", "input_register": "input", "coils": "coil",
                 "discrete_input": "discrete"}


def table_of(text: str) -> Table:
    name = TABLE_ALIASES.get(text.lower(), text.lower())
    try:
        return Table(name)
    except ValueError:
        raise CommandRefused("bad_argument", f"table {text!r}: one of holding, input, coil, "
                             "discrete (hr, ir, co, di)") from None


def check_request(table: Table, unit: int, address: int, count: int,
                  values: Sequence[int] | None = None) -> None:
    """CommandRefused("bad_argument") unless the request is one a device could answer."""
    write = values is not None
    if not (0 if write else 1) <= unit <= 247:
        raise CommandRefused("bad_argument", f"unit {unit}: unit ids are 1..247"
                             + (" (0: broadcast, writes only)" if write else ""))
    if write and table in (Table.INPUT, Table.DISCRETE):
        raise CommandRefused("bad_argument", f"{table} is read-only by protocol: write to "
                             "holding registers or coils")
    cap = ((MAX_WRITE_BITS if table.is_bits else MAX_WRITE_REGS) if write else
           (MAX_READ_BITS if table.is_bits else MAX_READ_REGS))
    if not 1 <= count <= cap:
        what = "bits" if table.is_bits else "registers"
        raise CommandRefused("bad_argument", f"count {count}: 1..{cap} {what} per request")
    if not 0 <= address <= 65535 or address + count > 65536:
        raise CommandRefused("bad_argument", f"address {address} + {count} runs past 65535")
    if values is not None:
        hi = 1 if table.is_bits else 65535
        bad = [v for v in values if isinstance(v, bool) or not isinstance(v, int)
               or not 0 <= v <= hi]
        if bad:
            raise CommandRefused("bad_argument", f"value {bad[0]!r}: each value is 0..{hi}")


@dataclass(frozen=True, slots=True)
class RawResult:
    registers: list[int] | None  # read: what the device answered; write: None
    exception: int | None  # the device answered with this Modbus exception code instead
    ms: float  # how long the transaction took

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"ms": round(self.ms, 1)}
        if self.exception is not None:
            out["exception"] = self.exception
        elif self.registers is not None:
            out["registers"] = self.registers
        return out


async def transact(bus: ModbusBus, table: Table, unit: int, address: int, count: int,
                   values: Sequence[int] | None, timeout_s: float) -> RawResult:
    """One checked read (``values`` None) or write. A Modbus exception is an answer (the unit
    is there): returned, not raised; timeouts and frame errors raise."""
    check_request(table, unit, address, count, values)
    t0 = time.monotonic()
    try:
        if values is None:
            regs = await bus.read(unit, table, address, count, timeout_s=timeout_s)
            return RawResult(list(regs), None, (time.monotonic() - t0) * 1e3)
        await bus.write(unit, table, address, list(values), timeout_s=timeout_s)
        return RawResult(None, None, (time.monotonic() - t0) * 1e3)
    except ModbusException as exc:
        return RawResult(None, exc.code, (time.monotonic() - t0) * 1e3)
