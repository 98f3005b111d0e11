"""Drafting a device profile: from a vendor's register table (CSV) or from what a unit answers.

CSV: a header row, then one register per row. Columns (case-insensitive, any order; only
``name``, ``address`` and ``type`` are required; others are kept empty):

    name, table, address, type, scale, unit, access, [order, length, bit, min, max, description]

* ``table``: holding / input / coil / discrete (also hr, ir, co, di, FC03, FC04, FC01, FC02);
  empty with a Modicon address (``30001``, ``40001``, ``400001``): taken from its first digit.
* ``address``: the 0-based protocol address (decimal or 0x hex), or a Modicon number (then
  1-based in the manual's way: ``40001`` is holding 0). ``--one-based`` for manuals counting
  plain addresses from 1.
* ``type``: int16, uint16, int32, uint32, float32, int64, uint64, float64, string, bit, bool,
  and the usual vendor spellings (U16, S16, INT, WORD, DWORD, FLOAT, REAL, DOUBLE, ASCII...).
* ``access``: r, ro, read, rw, r/w, read/write.
* ``min``/``max``: bounds of a writable point, or the plausible range of a read-only one.

Every row problem is reported with its line; what the CSV does not say (bounds of a writable
point, the length of a string) is left for the technician and named by the validation.
"""

from __future__ import annotations

import csv
import io
import json
import re
import textwrap
from dataclasses import dataclass, field
from typing import Any

from edge_agent.profiles.model import COMPONENT_CLASSES, DataType, Order, Table

REQUIRED = ("name", "address", "type")
KNOWN = ("name", "table", "address", "type", "scale", "unit", "access", "order", "length", "bit",
         "min", "max", "description")
_TYPES = {
    "int16": "int16", "s16": "int16", "i16": "int16", "short": "int16", "int": "int16",
    "signed16": "int16", "sint16": "int16",
    "uint16": "uint16", "u16": "uint16", "word": "uint16", "ushort": "uint16",
    "unsigned16": "uint16", "uint": "uint16",
    "int32": "int32", "s32": "int32", "i32": "int32", "long": "int32", "dint": "int32",
    "sint32": "int32",
    "uint32": "uint32", "u32": "uint32", "dword": "uint32", "ulong": "uint32", "udint": "uint32",
    "int64": "int64", "s64": "int64", "i64": "int64", "lint": "int64",
    "uint64": "uint64", "u64": "uint64", "ulint": "uint64", "qword": "uint64",
    "float32": "float32", "f32": "float32", "float": "float32", "real": "float32",
    "ieee754": "float32",
    "float64": "float64", "f64": "float64", "double": "float64", "lreal": "float64",
    "string": "string", "str": "string", "ascii": "string", "char": "string",
    "bit": "bit", "bool": "bool", "boolean": "bool", "coil": "bool",
    "enum": "enum",
}
_TABLES = {"holding": "holding", "hr": "holding", "fc03": "holding", "fc3": "holding",
           "4x": "holding", "input": "input", "ir": "input", "fc04": "input", "fc4": "input",
           "3x": "input", "coil": "coil", "co": "coil", "coils": "coil", "fc01": "coil",
           "fc1": "coil", "0x": "coil", "discrete": "discrete", "di": "discrete",
           "fc02": "discrete", "fc2": "discrete", "1x": "discrete"}
_MODICON_TABLE = {"0": "coil", "1": "discrete", "3": "input", "4": "holding"}
_ACCESS = {"r": "r", "ro": "r", "read": "r", "readonly": "r", "read-only": "r",
           "rw": "rw", "r/w": "rw", "read/write": "rw", "readwrite": "rw", "w": "rw",
           "wo": "rw", "write": "rw"}


@dataclass
class Draft:
    """Points as TOML-ready dicts, the CSV line each came from, and the problems found."""

    points: list[dict[str, Any]] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)  # CSV line of points[i]
    problems: list[str] = field(default_factory=list)  # "line 7: ..."
    notes: list[str] = field(default_factory=list)


def point_name(text: str) -> str:
    """``Flow Rate (m³/h)`` -> ``flow_rate_m_h``: what a profile accepts as a name."""
    name = re.sub(r"[^a-z0-9]+", "_", text.strip().lower()).strip("_")
    if not name or not name[0].isalpha():
        name = f"p_{name}" if name else "point"
    return name[:63]


def _number(text: str) -> float | int | None:
    t = text.strip().replace(",", ".") if text.count(",") == 1 and "." not in text else text
    try:
        return int(t, 0)
    except ValueError:
        pass
    try:
        return float(t)
    except ValueError:
        return None


def _address(row: dict[str, str], table: str, one_based: bool,
             where: str, draft: Draft) -> tuple[str, int] | None:
    text = row.get("address", "").strip()
    try:
        value = int(text, 0)
    except ValueError:
        draft.problems.append(f"{where}: address {text!r} is not a number")
        return None
    digits = text if text.isdigit() else ""
    modicon = len(digits) in (5, 6) and digits[0] in _MODICON_TABLE and not text.startswith("0x")
    if modicon and (not table or table == _MODICON_TABLE[digits[0]]):
        table = _MODICON_TABLE[digits[0]]
        value = int(digits[1:]) - 1
        if value < 0:
            draft.problems.append(f"{where}: Modicon address {text} counts from {digits[0]}0001")
            return None
    elif one_based:
        value -= 1
    if not table:
        draft.problems.append(f"{where}: no table (holding, input, coil, discrete) and "
                              f"address {text!r} is not a Modicon number such as 40001")
        return None
    if not 0 <= value <= 65535:
        draft.problems.append(f"{where}: address {value} is outside 0..65535")
        return None
    return table, value


def from_csv(text: str, *, one_based: bool = False, order: str = "ABCD") -> Draft:
    draft = Draft()
    sample = text[:4096]
    try:
        dialect: Any = csv.Sniffer().sniff(sample, delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.DictReader(io.StringIO(text), dialect=dialect)
    fields = [f.strip().lower() for f in (reader.fieldnames or [])]
    reader.fieldnames = fields
    missing = [c for c in REQUIRED if c not in fields]
    if missing:
        draft.problems.append(f"line 1: the header has no {', '.join(missing)} column(s) "
                              f"(columns: {', '.join(KNOWN)})")
        return draft
    unknown = [f for f in fields if f and f not in KNOWN]
    if unknown:
        draft.notes.append(f"columns ignored: {', '.join(unknown)}")
    seen: dict[str, int] = {}
    for row in reader:
        line = reader.line_num
        r = {k: (v or "").strip() for k, v in row.items() if isinstance(k, str)}
        if not any(r.values()) or r.get("name", "").startswith("#"):
            continue
        where = f"line {line}"
        point = _row(r, where, one_based, order, draft)
        if point is None:
            continue
        name = point["name"]
        if name in seen:
            n = 2
            while f"{name}_{n}" in seen:
                n += 1
            draft.notes.append(f"{where}: name {name!r} also on line {seen[name]}: "
                               f"called {name}_{n}")
            name = point["name"] = f"{name}_{n}"
        seen[name] = line
        draft.points.append(point)
        draft.lines.append(line)
    if not draft.points and not draft.problems:
        draft.problems.append("no register rows after the header")
    return draft


def _row(r: dict[str, str], where: str, one_based: bool, order: str,
         draft: Draft) -> dict[str, Any] | None:
    """The point of one CSV row; None when the row has problems, every one of them added to
    ``draft.problems`` (not only the first)."""
    before = len(draft.problems)
    raw_name = r.get("name", "")
    if not raw_name:
        draft.problems.append(f"{where}: no name")
    table = _TABLES.get(r.get("table", "").lower().replace(" ", ""), "")
    if r.get("table") and not table:
        draft.problems.append(f"{where}: table {r['table']!r} is not holding, input, coil or "
                              "discrete")
    at = _address(r, table, one_based, where, draft)
    table, address = at if at is not None else (table, 0)
    tword = r.get("type", "").lower().replace(" ", "").replace("-", "").replace("_", "")
    dtype = _TYPES.get(tword)
    if dtype is None and table in ("coil", "discrete") and not tword:
        dtype = "bool"
    if dtype is None:
        draft.problems.append(f"{where}: type {r.get('type')!r} is not one of "
                              f"{', '.join(sorted({t.value for t in DataType}))}")
        dtype = "uint16"  # to look at the rest of the row
    if table in ("coil", "discrete"):
        dtype = "bool"
    elif dtype == "bool":
        dtype = "bit"
    p: dict[str, Any] = {"name": point_name(raw_name), "table": table, "address": address,
                         "type": dtype}
    if p["name"] != raw_name.lower():
        p["description"] = raw_name
    if r.get("order"):
        o = r["order"].upper()
        if o not in {x.value for x in Order}:
            draft.problems.append(f"{where}: order {r['order']!r} is not ABCD, CDAB, BADC "
                                  "or DCBA")
        elif o != order:
            p["order"] = o
    for key in ("length", "bit"):
        if r.get(key):
            v = _number(r[key])
            if not isinstance(v, int):
                draft.problems.append(f"{where}: {key} {r[key]!r} is not a whole number")
            else:
                p[key] = v
    numeric = dtype not in ("string", "bit", "bool", "enum")
    if r.get("scale"):
        v = _number(r["scale"])
        if v is None or v == 0:
            draft.problems.append(f"{where}: scale {r['scale']!r} is not a non-zero number")
        elif v != 1 and numeric:
            p["scale"] = v
    if r.get("unit") and dtype not in ("bit", "bool"):
        p["unit"] = r["unit"]
    access = _ACCESS.get(r.get("access", "r").lower().replace(" ", "") or "r")
    if access is None:
        draft.problems.append(f"{where}: access {r['access']!r} is not r or rw")
    if access == "rw":
        p["access"] = "rw"
    lo, hi = _number(r.get("min", "")), _number(r.get("max", ""))
    if numeric and lo is not None and hi is not None:
        if access == "rw":
            p["min"], p["max"] = lo, hi
        else:
            p["valid_range"] = [lo, hi]
    if r.get("description"):
        p["description"] = r["description"]
    return p if len(draft.problems) == before else None


def render(name: str, points: list[dict[str, Any]], *, vendor: str, model: str, cls: str,
           order: str, source: str, comments: dict[int, str] | None = None) -> str:
    """The profile as TOML, in the shipped profiles' layout."""
    q = json.dumps
    head = textwrap.wrap(f"{name}: drafted by `edge-agent profile new` from {source}.", 96)
    out = [*(f"# {h}" for h in head),
           "# Check every point against the manual (table, 0-based address, type, word order,",
           "# scale, bounds), then: edge-agent check-config THIS_FILE",
           f"vendor = {q(vendor, ensure_ascii=False)}",
           f"model = {q(model, ensure_ascii=False)}",
           f"class = {q(cls if cls in COMPONENT_CLASSES else 'generic')}",
           'protocol = "modbus"',
           f"byte_order = {q(order)}",
           "max_gap = 8"]
    for i, p in enumerate(points):
        out.append("")
        if comments and i in comments:
            out.append(f"# {comments[i]}")
        out.append("[[points]]")
        for k, v in p.items():
            out.append(f"{k} = {_toml(v)}")
    return "\n".join(out) + "\n"


def _toml(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return json.dumps(str(v), ensure_ascii=False)


def problem_line(path: str, draft_lines: list[int]) -> str:
    """``points[3].type`` -> ``line 7 (points[3].type)`` when the point came from a CSV row."""
    m = re.match(r"points\[(\d+)\]", path)
    if m and int(m.group(1)) < len(draft_lines):
        return f"line {draft_lines[int(m.group(1))]} ({path})"
    return path


def from_registers(found: dict[tuple[str, int], int]) -> tuple[list[dict[str, Any]],
                                                                dict[int, str]]:
    """Points for registers/bits a unit answered (``(table, address) -> value``): one uint16 (or
    bool) each, named after where it lives, with what was read as a comment."""
    points: list[dict[str, Any]] = []
    comments: dict[int, str] = {}
    for (table, address), value in sorted(found.items(), key=lambda x: (Table(x[0][0]).value,
                                                                          x[0][1])):
        bits = Table(table).is_bits
        p: dict[str, Any] = {"name": f"{table}_{address}", "table": table, "address": address}
        if not bits:
            p["type"] = "uint16"
        comments[len(points)] = (f"read {'on' if value else 'off'}" if bits
                                 else f"read {value} (0x{value:04X}): name, type and scale?")
        points.append(p)
    return points, comments
