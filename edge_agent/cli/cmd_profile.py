"""`edge-agent profile`: device profiles for the technician.

    edge-agent profile list [--markdown] [--profiles DIR]     what the profiles cover
    edge-agent profile new NAME --csv REGISTERS.csv [...]     a draft from a vendor's table
    edge-agent profile new NAME --scan BUS UNIT [...]         a draft from what a unit answers

A draft is written (never over an existing file without --force) and validated like
`check-config`: every problem with its CSV line, and what to add next.
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from typing import Any

from edge_agent.cli.argtypes import baud
from edge_agent.cli.common import (
    EXIT_FAIL,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    add_common,
    emit,
    table,
)
from edge_agent.profiles.model import COMPONENT_CLASSES, ModbusPoint, Order, Profile, Table

NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
SCAN_BLOCK = 16


# -- list ------------------------------------------------------------------------------------

def covers(prof: Profile) -> str:
    names = [p.name for p in prof.points]
    return ", ".join(names)


def rows_of(profiles: dict[str, Profile]) -> list[dict[str, Any]]:
    out = []
    for name, prof in sorted(profiles.items()):
        writable = [p.name for p in prof.points if isinstance(p, ModbusPoint) and p.writable]
        out.append({"profile": name, "class": prof.component_class,
                    "device": f"{prof.vendor} {prof.model}", "protocol": str(prof.protocol),
                    "points": len(prof.points), "covers": covers(prof), "writable": writable,
                    "description": prof.description})
    return out


def markdown(rows: list[dict[str, Any]]) -> str:
    """The README's table of shipped profiles."""
    lines = ["| profile | device | class | protocol | what it reads | writable |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| `{r['profile']}` | {r['device']} | {r['class']} | {r['protocol']} | "
                     f"{r['covers']} | {', '.join(r['writable']) or '-'} |")
    return "\n".join(lines)


def _list(args: argparse.Namespace) -> int:
    from edge_agent.profiles.load import load_profiles
    from edge_agent.profiles.shipped import shipped_dir

    rows = rows_of(load_profiles(args.profiles if args.profiles is not None else shipped_dir()))
    if args.markdown:
        print(markdown(rows))
        return EXIT_OK
    emit(args, rows, table(["profile", "class", "device", "protocol", "points", "writable"],
                           [[r["profile"], r["class"], r["device"], r["protocol"], r["points"],
                             ", ".join(r["writable"]) or "-"] for r in rows]))
    return EXIT_OK


# -- new -------------------------------------------------------------------------------------

def _span(text: str) -> tuple[Table, range]:
    from edge_agent.bus.raw import table_of

    tbl, _, rng = text.partition(":")
    lo, _, hi = rng.partition("-")
    try:
        a, b = int(lo, 0), int(hi or lo, 0)
    except ValueError:
        raise CliError(f"--span {text!r} is not TABLE:LO-HI", "e.g. --span input:0-99",
                       EXIT_USAGE, "usage") from None
    if not 0 <= a <= b <= 65535:
        raise CliError(f"--span {text!r}: addresses 0..65535, low-high", "", EXIT_USAGE, "usage")
    return table_of(tbl), range(a, b + 1)


async def _probe_span(bus: Any, unit: int, tbl: Table, span: range, timeout: float,
                      found: dict[tuple[str, int], int]) -> int:
    """Read ``span`` in blocks; a refused block is split down to single addresses (a unit
    refuses a read that touches any address it does not have). How many addresses answered."""
    from edge_agent.errors import ModbusException

    answered = 0
    todo = [(a, min(SCAN_BLOCK, span.stop - a)) for a in range(span.start, span.stop,
                                                                 SCAN_BLOCK)]
    while todo:
        address, count = todo.pop(0)
        try:
            regs = await bus.read(unit, tbl, address, count, timeout_s=timeout)
        except ModbusException:
            if count > 1:
                half = count // 2
                todo[:0] = [(address, half), (address + half, count - half)]
            continue
        answered += count
        for i, v in enumerate(regs):
            found[(str(tbl), address + i)] = int(v)
    return answered


def _from_scan(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[int, str], str]:
    from edge_agent.cli.argtypes import unit_id
    from edge_agent.cli.profile_draft import from_registers
    from edge_agent.cli.raw_client import open_line

    bus_name, unit_text = args.scan
    try:
        unit = unit_id(unit_text)
    except argparse.ArgumentTypeError as exc:
        raise CliError(f"--scan BUS UNIT: {exc}", "", EXIT_USAGE, "usage") from None
    if unit == 0:
        raise CliError("--scan BUS UNIT: unit 0 is the broadcast address: nobody answers it",
                       "give the unit id, 1..247", EXIT_USAGE, "usage")
    spans = [_span(s) for s in (args.span or ["holding:0-99", "input:0-99"])]
    line = open_line(args, bus_name, baud=args.baud, parity=args.parity)
    found: dict[tuple[str, int], int] = {}

    async def go() -> int:
        try:
            n = 0
            for tbl, span in spans:
                n += await _probe_span(line.bus, unit, tbl, span, line.timeout_s, found)
            return n
        finally:
            await line.bus.close()

    answered = line.run(go())
    if not answered:
        raise CliError(f"unit {unit} on {line.label} answered none of "
                       f"{', '.join(f'{t} {r.start}-{r.stop - 1}' for t, r in spans)}",
                       "try other --span ranges (see the manual)", EXIT_FAIL, "nothing_found")
    kept = {k: v for k, v in found.items() if v or args.keep_zeros}
    points, comments = from_registers(kept)
    skipped = len(found) - len(kept)
    src = (f"a scan of unit {unit} on {line.label}: {answered} addresses answered"
           + (f", {skipped} reading 0 left out (--keep-zeros keeps them)" if skipped else ""))
    if not points:
        raise CliError(f"unit {unit} answered {answered} addresses, all reading 0",
                       "add --keep-zeros to draft them anyway", EXIT_FAIL, "nothing_found")
    return points, comments, src


def _write(path: Path, text: str, force: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o644)
    except FileExistsError:
        raise CliError(f"{path} already exists", "choose another --out, or --force to "
                       "replace it", EXIT_USAGE, "exists") from None
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def _csv_hint(path: str, message: str, csv: bool) -> str:
    """What to add to the CSV (or the draft) for a validation problem."""
    key = path.rpartition(".")[2] if "." in path else ""
    if "required key missing" in message and key:
        return f"fill the {key!r} column of that row" if csv else f"add {key} = ..."
    if "no bounds" in message:
        return "fill its min and max columns" if csv else "add min = ... and max = ..."
    return ""


def _located(problem: str) -> dict[str, Any]:
    """``line 7: scale 'x' is not ...`` as ``{"line": 7, "message": "scale 'x' is not ..."}``
    (--json); a problem with no line keeps its text as the message."""
    m = re.match(r"line (\d+)[^:]*: (.*)", problem, re.S)
    if m:
        return {"line": int(m.group(1)), "message": m.group(2)}
    return {"line": None, "message": problem}


def _new(args: argparse.Namespace) -> int:
    from edge_agent.cli.profile_draft import from_csv, problem_line, render
    from edge_agent.errors import ConfigError
    from edge_agent.profiles.load import load_profile

    if not NAME_RE.match(args.name):
        raise CliError(f"profile name {args.name!r}: lower-case letters, digits and _ , "
                       "starting with a letter", "e.g. acme_ps2", EXIT_USAGE, "usage")
    if (args.csv is None) == (args.scan is None):
        raise CliError("give --csv FILE or --scan BUS UNIT", "see: edge-agent profile new "
                       "--help", EXIT_USAGE, "usage")
    out: Path = args.out or Path(f"{args.name}.toml")
    if out.is_dir():
        out = out / f"{args.name}.toml"
    missing = out if out.suffix != ".toml" else out.parent
    if not missing.is_dir() and not missing.exists():  # /nonexist/dir: not a file name problem
        raise CliError(f"--out {args.out}: no such directory {missing}", "create it first "
                       f"(mkdir -p {missing}), or name an existing directory or {args.name}.toml",
                       EXIT_USAGE, "no_directory")
    if out.stem != args.name:
        raise CliError(f"{out}: a profile's file name is its name: {args.name}.toml",
                       "", EXIT_USAGE, "usage")
    lines: list[int] = []
    notes: list[str] = []
    comments: dict[int, str] = {}
    if args.csv is not None:
        from edge_agent.cli.csv_text import read_csv_text

        draft = from_csv(read_csv_text(args.csv, args.encoding), one_based=args.one_based,
                         order=args.byte_order)
        if draft.problems:
            if not args.json:
                for problem in draft.problems:
                    print(f"{args.csv}: {problem}")
            raise CliError(f"{len(draft.problems)} problem(s) in {args.csv}: the draft cannot "
                           "be made", "fix them and run again (nothing was written)", EXIT_FAIL,
                           "bad_csv", {"file": str(args.csv),
                                       "problems": [_located(p) for p in draft.problems]})
        points, lines, notes, source = draft.points, draft.lines, draft.notes, str(args.csv)
    else:
        points, comments, source = _from_scan(args)
    text = render(args.name, points, vendor=args.vendor, model=args.model or args.name,
                  cls=args.cls, order=args.byte_order, source=source, comments=comments)
    _write(out, text, args.force)
    for n in notes:
        print(f"note: {n}")
    try:
        prof = load_profile(out)
    except ConfigError as exc:
        where = args.csv or out
        found = []
        for prob in exc.problems:
            hint = prob.hint or _csv_hint(prob.path, prob.message, args.csv is not None)
            found.append({**_located(f"{problem_line(prob.path, lines)}: {prob.message}"),
                          "key": prob.path, "hint": hint})
            if not args.json:
                print(f"{where}: {problem_line(prob.path, lines)}: {prob.message}"
                      + (f" ({hint})" if hint else ""))
        raise CliError(f"wrote the draft {out}, but it does not validate yet "
                       f"({len(exc.problems)} problem(s)"
                       + (" above)" if not args.json else ")"),
                       f"add what they name, then: edge-agent check-config {out}", EXIT_FAIL,
                       "invalid_draft", {"file": str(where), "draft": str(out),
                                         "problems": found}) from None
    emit(args, {"file": str(out), "points": len(prof.points), "notes": notes},
         f"wrote {out}: {len(prof.points)} points from {source}; it validates.\n"
         f"next: name and check each point against the manual, check the file "
         f"(edge-agent check-config {out}), copy it to the profiles directory and add the "
         "device to agent.toml")
    return EXIT_OK


def register(sub: Any) -> None:
    p = sub.add_parser("profile", help="list the device profiles; draft a new one from a "
                                       "vendor's register table (CSV) or a scan",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    psub = p.add_subparsers(dest="profile_op", metavar="ACTION", required=True)
    ls = psub.add_parser("list", help="the profiles and what they cover")
    ls.add_argument("--profiles", type=Path, metavar="DIR",
                    help="a profile directory (default: the profiles shipped with the agent)")
    ls.add_argument("--markdown", action="store_true", help="as a Markdown table (README)")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(func=_list)
    n = psub.add_parser("new", help="draft a profile and validate it",
                        description="Draft NAME.toml from a vendor's register table (--csv, "
                                    "columns: name, table, address, type, scale, unit, access, "
                                    "optional order, length, bit, min, max, description) or "
                                    "from what a unit answers (--scan BUS UNIT), then validate "
                                    "it like check-config.")
    n.add_argument("name", help="profile name = file name (e.g. acme_ps2)")
    n.add_argument("--csv", type=Path, metavar="FILE", help="the vendor's register table")
    n.add_argument("--encoding", metavar="NAME",
                   help="with --csv: the file's encoding when it is not UTF-8 and has no "
                        "byte-order mark (e.g. cp1252); default: UTF-8, or what its BOM says")
    n.add_argument("--scan", nargs=2, metavar=("BUS", "UNIT"),
                   help="read a unit (through the daemon when it runs) and draft what answers")
    n.add_argument("--span", action="append", metavar="TABLE:LO-HI",
                   help="with --scan: addresses to try, repeatable (default: holding:0-99 and "
                        "input:0-99)")
    n.add_argument("--keep-zeros", action="store_true",
                   help="with --scan: draft registers reading 0 too")
    n.add_argument("--baud", type=baud,
                   help="with --scan of a port not in the config (default: 9600)")
    n.add_argument("--parity", choices=["N", "E", "O"],
                   help="with --scan of a port not in the config (default: N)")
    n.add_argument("--vendor", default="unknown", help="(default: %(default)s)")
    n.add_argument("--model", help="(default: NAME)")
    n.add_argument("--class", dest="cls", choices=COMPONENT_CLASSES, default="generic",
                   help="component class (default: %(default)s)")
    n.add_argument("--byte-order", choices=[o.value for o in Order], default="ABCD",
                   help="the device's word/byte order for 32/64-bit values (default: "
                        "%(default)s; CDAB = low word first)")
    n.add_argument("--one-based", action="store_true",
                   help="the CSV counts plain addresses from 1 (Modicon 40001-style numbers "
                        "are always converted)")
    n.add_argument("--out", "-o", type=Path, help="file or directory (default: ./NAME.toml)")
    n.add_argument("--force", action="store_true", help="replace an existing file")
    add_common(n)
    n.set_defaults(func=_new)
