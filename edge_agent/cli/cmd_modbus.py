"""``edge-agent modbus read|write``: raw registers for commissioning (what mbpoll is used for),
through the daemon's bus owner when the daemon runs (serialised with its polls: never a second
master on the line), straight on the port when it does not.

    edge-agent modbus read  BUS UNIT TABLE ADDRESS [COUNT] [--type T] [--order O] [--scale S]
    edge-agent modbus write BUS UNIT TABLE ADDRESS VALUE... [--type T] [--order O] [--yes]

BUS: a bus name of the config (or of the running daemon), its serial port, another serial port
(with --baud/--parity) or HOST:PORT. ADDRESS is the 0-based protocol address (a manual's 40001
is holding 0). COUNT counts values of --type (registers for ``string``). A write is bounded by no
profile: it asks first (--yes for scripts) and the daemon logs an audit line.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

from edge_agent.cli.argtypes import address, baud, count, scale, seconds, unit_id
from edge_agent.cli.common import (
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    add_common,
    emit,
    table,
)
from edge_agent.errors import CodecError
from edge_agent.profiles.model import REGISTER_WIDTH, DataType, Order, Table

TYPES = ["uint16", "int16", "uint32", "int32", "float32", "uint64", "int64", "float64",
         "string", "hex", "bool"]


def _width(dtype: str, n: int) -> int:
    if dtype in ("uint16", "int16", "hex", "bool"):
        return 1
    if dtype == "string":
        return n
    return REGISTER_WIDTH[DataType(dtype)]


def _decode(dtype: str, order: Order, regs: list[int], scale: float) -> Any:
    from edge_agent.profiles.codec import raw_decode

    if dtype == "hex":
        return " ".join(f"0x{r:04X}" for r in regs)
    if dtype == "bool":
        return bool(regs[0])
    if dtype == "string":
        return str(raw_decode(DataType.STRING, order, regs, length=len(regs))).rstrip("\x00 ")
    value = raw_decode(DataType(dtype), order, regs)
    if scale != 1.0 and isinstance(value, int | float):
        return value * scale
    return value


def _a(dtype: str) -> str:
    return ("an " if dtype.startswith("int") else "a ") + dtype


def _encode(dtype: str, order: Order, text: str, scale: float, bits: bool) -> list[int]:
    from edge_agent.profiles.codec import raw_encode

    if bits or dtype == "bool":
        low = text.lower()
        if low in ("1", "on", "true", "yes"):
            return [1]
        if low in ("0", "off", "false", "no"):
            return [0]
        raise CliError(f"{text!r} is not a bit value", "use 0/1, on/off or true/false",
                       EXIT_USAGE, "bad_value")
    if dtype == "string":
        n = (len(text.encode()) + 1) // 2
        if n > 123:
            raise CliError(f"a string of {len(text.encode())} bytes does not fit one write",
                           "at most 246 bytes (123 registers)", EXIT_USAGE, "bad_value")
        return raw_encode(DataType.STRING, order, text, length=max(1, n))
    as_float = dtype in ("float32", "float64") or scale != 1.0
    what = "numbers like 12.5 or -3" if as_float else "integers in decimal or 0x hex"
    try:
        raw: float | int = float(text) / scale if as_float else int(text, 0)
    except ValueError:
        raise CliError(f"{text!r} is not {_a(dtype)} value", what, EXIT_USAGE,
                       "bad_value") from None
    if isinstance(raw, float) and not math.isfinite(raw):
        raise CliError(f"{text!r} is not a finite number", f"{dtype} values are {what}",
                       EXIT_USAGE, "bad_value")
    if dtype not in ("float32", "float64"):
        raw = round(raw)
    kind = DataType.UINT16 if dtype == "hex" else DataType(dtype)
    try:
        return raw_encode(kind, order, raw)
    except CodecError as exc:  # outside the type's range
        shown = f"{text} / scale {scale:g} = {raw:g}" if scale != 1.0 else text
        raise CliError(f"{shown} does not fit {_a(dtype)}", f"{exc}".partition(": ")[2],
                       EXIT_USAGE, "bad_value") from None


def _rows(dtype: str, order: Order, address: int, regs: list[int], scale: float,
          bits: bool) -> list[dict[str, Any]]:
    if bits:
        return [{"address": address + i, "registers": [r], "value": bool(r)}
                for i, r in enumerate(regs)]
    w = _width(dtype, len(regs))
    return [{"address": address + i, "registers": regs[i:i + w],
             "value": _decode(dtype, order, regs[i:i + w], scale)}
            for i in range(0, len(regs) - w + 1, w)]


def _render(head: str, rows: list[dict[str, Any]], dtype: str, bits: bool) -> str:
    from edge_agent.profiles.display import format_value

    def shown(v: Any) -> str:
        if isinstance(v, float):
            return format_value(v, None, 7 if dtype in ("float32",) else 15)
        return "on" if v is True else "off" if v is False else str(v)

    if bits:
        return head + "\n" + table(["address", "value"],
                                   [[r["address"], shown(r["value"])] for r in rows], right=(0,))
    return head + "\n" + table(
        ["address", "registers", dtype],
        [[r["address"], " ".join(f"0x{x:04X}" for x in r["registers"]), shown(r["value"])]
         for r in rows], right=(0,))


async def _run(line: Any, table_: Table, unit: int, address: int, n: int,
               values: list[int] | None, timeout_s: float) -> Any:
    from edge_agent.bus.raw import transact

    try:
        return await transact(line.bus, table_, unit, address, n, values, timeout_s)
    finally:
        await line.bus.close()


def _modbus(args: argparse.Namespace) -> int:
    from edge_agent.bus.raw import check_request, table_of
    from edge_agent.cli.raw_client import open_line

    tbl = table_of(args.table)
    bits = tbl.is_bits
    dtype = "bool" if bits else args.type
    order = Order(args.order)
    write = args.modbus_op == "write"
    values: list[int] | None = None
    if write:
        values = [r for text in args.values for r in _encode(dtype, order, text, args.scale,
                                                                bits)]
        n = len(values)
    else:
        n = args.count * _width(dtype, args.count) if dtype != "string" else args.count
        n = args.count if bits else n
    check_request(tbl, args.unit, args.address, n, values)  # before any line is opened
    line = open_line(args, args.bus, baud=args.baud, parity=args.parity)
    where = f"{line.label} unit {args.unit} {tbl} {args.address}" + \
        (f"..{args.address + n - 1}" if n > 1 else "")
    if write and not args.yes:
        if not sys.stdin.isatty():
            raise CliError("refusing to write without confirmation: not on a terminal",
                           "add --yes", EXIT_USAGE, "not_confirmed")
        shown = " ".join(args.values)
        answer = input(f"write {shown} ({dtype}) to {where}? No profile bounds this write. "
                       "[y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            raise CliError("cancelled", "", 1, "cancelled")
    timeout = args.timeout if args.timeout is not None else line.timeout_s
    try:
        res = line.run(_run(line, tbl, args.unit, args.address, n, values, timeout))
    except CliError as exc:
        if exc.code != "timeout" or line.tcp:
            raise
        # a raw unit id, maybe no device of the config: its history is not where to look
        raise CliError(exc.message, f"is there a unit {args.unit} on {line.label}? `edge-agent "
                       f"scan {args.bus}` lists the units that answer; else check its power, "
                       "wiring and the line's baud rate and parity", exc.exit, exc.code) from None
    if res.exception is not None:
        from edge_agent.cli.failure import modbus_exception_text

        raise CliError(f"unit {args.unit} answered {modbus_exception_text(res.exception)}",
                       "the unit is there: check table, address and count against its manual",
                       1, "modbus_exception")
    via = "through the daemon" if line.via == "daemon" else "direct"
    if write:
        out = {"bus": line.label, "unit": args.unit, "table": str(tbl), "address": args.address,
               "written": values, "via": line.via, "ms": round(res.ms, 1)}
        emit(args, out, f"wrote {n} {'bit' if bits else 'register'}{'s' if n > 1 else ''} "
                        f"to {where} ({via}, {res.ms:.0f} ms)")
        return EXIT_OK
    regs = list(res.registers or [])
    rows = _rows(dtype, order, args.address, regs, args.scale, bits)
    out = {"bus": line.label, "unit": args.unit, "table": str(tbl), "address": args.address,
           "registers": regs, "values": [r["value"] for r in rows], "type": dtype,
           "via": line.via, "ms": round(res.ms, 1)}
    head = f"{where} ({via}, {res.ms:.0f} ms)"
    emit(args, out, _render(head, rows, dtype if dtype != "bool" else "value", bits))
    return EXIT_OK


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("bus", help="bus name, serial port (e.g. /dev/ttyUSB0) or HOST:PORT")
    p.add_argument("unit", type=unit_id, help="unit id (1..247; 0: broadcast write)")
    p.add_argument("table", help="holding, input, coil or discrete (hr, ir, co, di)")
    p.add_argument("address", type=address,
                   help="0-based protocol address (decimal or 0x hex; manual 40001 = holding 0)")


def _options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--type", choices=TYPES, default="uint16",
                   help="how to read the registers (default: %(default)s; bit tables: bool)")
    p.add_argument("--order", choices=[o.value for o in Order], default="ABCD",
                   help="byte/word order of multi-register values (default: %(default)s; "
                        "CDAB = low word first)")
    p.add_argument("--scale", type=scale, default=1.0,
                   help="engineering = raw x scale (default: %(default)s)")
    p.add_argument("--timeout", type=seconds,
                   help="seconds to wait for the answer (default: the bus's timeout_max)")
    p.add_argument("--baud", type=baud,
                   help="for a serial port not in the config (default: 9600; refused when it "
                        "differs from the line's own settings)")
    p.add_argument("--parity", choices=["N", "E", "O"],
                   help="for a serial port not in the config (default: N)")
    add_common(p)


def register(sub: Any) -> None:
    p = sub.add_parser("modbus", help="read/write raw registers (commissioning; through the "
                                      "daemon when it runs)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    msub = p.add_subparsers(dest="modbus_op", metavar="ACTION", required=True)
    r = msub.add_parser("read", help="read registers or bits")
    _common(r)
    r.add_argument("count", type=count, nargs="?", default=1,
                   help="how many values of --type (default: %(default)s)")
    _options(r)
    r.set_defaults(func=_modbus)
    w = msub.add_parser("write", help="write registers or bits (asks first; --yes)")
    _common(w)
    w.add_argument("values", nargs="+", metavar="VALUE",
                   help="values of --type (bits: 0/1, on/off)")
    w.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    _options(w)
    w.set_defaults(func=_modbus)
