"""Load and validate device profiles (``device_profiles/*.toml``, format in docs/profiles.md).

``load_profile(path)`` / ``load_profiles(directory)`` return ``Profile`` objects or raise one
``ConfigError`` carrying every Problem found (file, key path such as ``points[3].type``, message,
"did you mean" hint). The checks that need only the profile itself live here: types per table,
widths past 65535, overlapping registers, duplicate names, writable points without bounds, enum
labels, plausible ranges (``profiles.ranges``), intervals/heartbeats/deadbands, AT regexes and
groups.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from edge_agent.errors import ConfigError, Problem
from edge_agent.profiles.fields import MISSING, Problems, Table, did_you_mean, read_toml
from edge_agent.profiles.model import (
    COMPONENT_CLASSES,
    REGISTER_WIDTH,
    Access,
    AtPoint,
    DataType,
    Deadband,
    ModbusPoint,
    Order,
    Point,
    Profile,
    Protocol,
    Reporting,
)
from edge_agent.profiles.model import Table as RegTable
from edge_agent.profiles.ranges import bounds as read_bounds
from edge_agent.profiles.ranges import valid_range

NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
MIN_INTERVAL_S = 0.05
MAX_STRING_REGISTERS = 123  # what one read request can carry
NUMERIC = frozenset({DataType.INT16, DataType.UINT16, DataType.INT32, DataType.UINT32,
                     DataType.INT64, DataType.UINT64, DataType.FLOAT32, DataType.FLOAT64})
TOP_KEYS = ("vendor", "model", "class", "protocol", "byte_order", "max_gap", "description",
            "points")
REPORTING_KEYS = ("interval", "deadband", "deadband_percent", "heartbeat", "alarm")
COMMON_KEYS = ("name", "type", "unit", "scale", "offset", "enum", "valid_range", "description",
               "precision", *REPORTING_KEYS)
MODBUS_KEYS = ("table", "address", "order", "access", "min", "max", "step", "allowed", "length",
               "bit")
AT_KEYS = ("command", "pattern", "group")
POINT_KEYS = (*COMMON_KEYS, *MODBUS_KEYS, *AT_KEYS)
AT_TYPES = (*sorted(NUMERIC), DataType.BOOL, DataType.STRING, DataType.ENUM)


def load_profile(path: Path) -> Profile:
    """Load one profile file; its name is the file stem."""
    problems = Problems(str(path))
    profile = _load(path, problems)
    if problems.items or profile is None:
        raise ConfigError(problems.items)
    return profile


def load_profiles(directory: Path) -> dict[str, Profile]:
    """Every ``*.toml`` directly in ``directory`` (subdirectories ignored), keyed by file stem."""
    sink: list[Problem] = []
    profiles, _ = collect_profiles(directory, sink)
    if sink:
        raise ConfigError(sink)
    return profiles


def collect_profiles(directory: Path, sink: list[Problem]) -> tuple[dict[str, Profile], set[str]]:
    """Like ``load_profiles`` but never raises: problems go to ``sink``. Returns the profiles that
    loaded and the names (stems) of those that did not."""
    if not directory.is_dir():
        sink.append(Problem(str(directory), "", "profile directory does not exist"))
        return {}, set()
    profiles: dict[str, Profile] = {}
    broken: set[str] = set()
    for path in sorted(directory.glob("*.toml")):
        if not path.is_file():
            continue
        profile = _load(path, Problems(str(path), sink))
        if profile is None:
            broken.add(path.stem)
        else:
            profiles[profile.name] = profile
    return profiles, broken


def parse_profile(data: dict[str, Any], *, name: str, source: str = "<profile>") -> Profile:
    """Build a Profile from already-parsed TOML (e.g. in tests); raises ConfigError."""
    problems = Problems(source)
    profile = _parse(data, name, source, problems)
    if problems.items or profile is None:
        raise ConfigError(problems.items)
    return profile


def _load(path: Path, problems: Problems) -> Profile | None:
    data = read_toml(path, problems)
    if data is None:
        return None
    return _parse(data, path.stem, str(path), problems)


def _parse(data: dict[str, Any], name: str, source: str, problems: Problems) -> Profile | None:
    start = len(problems.items)
    top = Table(data, "", problems)
    vendor = top.string("vendor", required=True)
    model = top.string("model", required=True)
    cls = top.one_of("class", COMPONENT_CLASSES, required=True)
    protocol = top.choice("protocol", Protocol, required=True)
    description = top.string("description", "", nonempty=False) or ""
    order, max_gap = Order.ABCD, 8
    if protocol is Protocol.MODBUS:
        order = top.choice("byte_order", Order, Order.ABCD) or Order.ABCD
        max_gap = top.integer("max_gap", 8, lo=0, hi=125) or 0
    point_tables = top.tables("points")
    if not top.data.get("points"):
        top.error("points", "a profile needs at least one [[points]] entry")
    if protocol is None:
        point_tables = []  # cannot tell which kind of point they are
        top.used.update(("byte_order", "max_gap"))
    top.finish(TOP_KEYS, {"byte_order": 'only for protocol = "modbus"',
                          "max_gap": 'only for protocol = "modbus"'})
    placed: list[tuple[Table, Point]] = []
    for t in point_tables:
        p = _modbus_point(t, order) if protocol is Protocol.MODBUS else _at_point(t)
        if p is not None:
            placed.append((t, p))
    _check_names(point_tables, problems)
    _check_overlaps(placed, problems)
    points = [p for _, p in placed]
    if len(problems.items) > start or vendor is None or model is None or cls is None \
            or protocol is None:
        return None
    return Profile(name=name, vendor=vendor, model=model, component_class=cls, protocol=protocol,
                   points=tuple(points), order=order, max_gap=max_gap, description=description,
                   source=source)


def _name(t: Table) -> str | None:
    name = t.string("name", required=True)
    if name is not None and not NAME_RE.match(name):
        t.error("name", f"{name!r} is not a valid point name (lower case letters, digits, _; "
                        "starting with a letter)")
        return None
    return name


def _modbus_point(t: Table, default_order: Order) -> ModbusPoint | None:
    before = len(t.problems.items)
    name = _name(t)
    table = t.choice("table", RegTable, required=True)
    bits = table is not None and table.is_bits
    dtype = t.choice("type", DataType, DataType.BOOL if bits else None, required=not bits)
    address = t.integer("address", required=True, lo=0, hi=65535)
    if table is None or dtype is None:
        t.finish(POINT_KEYS, unknown_only=True)
        return None
    if bits and dtype is not DataType.BOOL:
        t.error("type", f'{table.value} points are single bits: type must be "bool"')
        dtype = DataType.BOOL
    if not bits and dtype is DataType.BOOL:
        t.error("type", f'"bool" is for coil/discrete points; in a {table.value} register use '
                        'type "bit" with bit = N')
        dtype = DataType.UINT16  # go on as a whole register: fewer follow-up complaints
    # strings are character runs in register order: a profile-wide byte_order (a device's word
    # order for numbers) does not apply to them, only their own ``order`` does
    order = Order.ABCD if dtype is DataType.STRING else default_order
    if not bits:
        order = t.choice("order", Order, order) or order
    scale, offset = _scale(t, dtype)
    unit = t.string("unit", "", nonempty=False) or ""
    access = t.choice("access", Access, Access.R) or Access.R
    if access is Access.RW and table in (RegTable.DISCRETE, RegTable.INPUT):
        t.error("access", f"{table.value} points are read-only by protocol")
    elif access is Access.RW and dtype in (DataType.BIT, DataType.STRING):
        t.error("access", f'{dtype.value} points cannot be written (use a whole register)')
    broken = len(t.problems.items) > before  # then skip checks that would only add noise
    length = bit = 0
    if dtype is DataType.STRING:
        length = t.integer("length", 0, required=True, lo=1, hi=MAX_STRING_REGISTERS) or 0
    if dtype is DataType.BIT:
        bit = t.integer("bit", 0, required=True, lo=0, hi=15) or 0
    enum = _enum(t, dtype, hi=65535)
    broken = broken or len(t.problems.items) > before
    bounds = read_bounds(t, dtype, enum) if access is Access.RW and not broken else None
    valid = valid_range(t, dtype) if access is Access.R and dtype in NUMERIC else None
    reporting = _reporting(t, dtype)
    if address is not None and dtype is not DataType.BOOL:
        width = length if dtype is DataType.STRING else REGISTER_WIDTH[dtype]
        if width and address + width - 1 > 65535:
            t.error("address", f"address {address} + {width} registers runs past 65535")
    description = t.string("description", "", nonempty=False) or ""
    precision = t.integer("precision", None, lo=0, hi=9) if dtype in NUMERIC else None
    t.finish(POINT_KEYS, _why(table, dtype), unknown_only=broken)
    if len(t.problems.items) > before or name is None or address is None:
        return None
    return ModbusPoint(name=name, table=table, address=address, type=dtype, order=order,
                       scale=scale, offset=offset, unit=unit, access=access, bounds=bounds,
                       reporting=reporting, length=length, bit=bit, enum=enum,
                       valid_range=valid, description=description, precision=precision)


def _at_point(t: Table) -> AtPoint | None:
    before = len(t.problems.items)
    name = _name(t)
    command = t.string("command", required=True)
    if command is not None and (not command.upper().startswith("AT") or "\r" in command
                                or "\n" in command):
        t.error("command", f"{command!r} is not an AT command (must start with AT, one line)")
    pattern = t.string("pattern", required=True)
    compiled: re.Pattern[str] | None = None
    if pattern is not None:
        try:
            compiled = re.compile(pattern)
        except re.error as exc:
            t.error("pattern", f"invalid regex at position {exc.pos}: {exc.msg}")
    group = _group(t, compiled)
    dtype = t.choice("type", DataType, DataType.INT32, allowed=AT_TYPES) or DataType.INT32
    scale, offset = _scale(t, dtype)
    unit = t.string("unit", "", nonempty=False) or ""
    enum = _enum(t, dtype, hi=None)
    valid = valid_range(t, dtype) if dtype in NUMERIC else None
    reporting = _reporting(t, dtype)
    description = t.string("description", "", nonempty=False) or ""
    precision = t.integer("precision", None, lo=0, hi=9) if dtype in NUMERIC else None
    t.finish(POINT_KEYS, _why(None, dtype, at=True))
    if len(t.problems.items) > before or name is None or command is None or pattern is None:
        return None
    return AtPoint(name=name, command=command, pattern=pattern, group=group, type=dtype,
                   unit=unit, scale=scale, offset=offset, enum=enum, reporting=reporting,
                   valid_range=valid, description=description, precision=precision)


def _group(t: Table, compiled: re.Pattern[str] | None) -> str:
    raw = t.raw("group")
    if raw is MISSING:
        raw = "1"
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        t.error("group", f"expected a group number or name, got {raw!r}")
        return "1"
    group = str(raw)
    if compiled is not None:
        if group.isdigit() and int(group) > compiled.groups:
            t.error("group", f"pattern has {compiled.groups} group(s), no group {group}")
        elif not group.isdigit() and group not in compiled.groupindex:
            t.error("group", f"pattern has no group named {group!r}",
                    did_you_mean(group, compiled.groupindex))
    return group


def _scale(t: Table, dtype: DataType) -> tuple[float, float]:
    if dtype not in NUMERIC:
        return 1.0, 0.0
    scale = t.number("scale", 1.0)
    if scale == 0:
        t.error("scale", "scale must not be 0")
    return scale or 1.0, t.number("offset", 0.0) or 0.0


def _enum(t: Table, dtype: DataType, *, hi: int | None) -> tuple[tuple[int, str], ...]:
    if dtype is not DataType.ENUM:
        return ()
    table = t.table("enum")
    if table is None:
        if not t.has("enum"):
            t.error("enum", 'type "enum" needs enum = { "0" = "label", ... }')
        return ()
    pairs: list[tuple[int, str]] = []
    for key, label in table.data.items():
        table.used.add(key)
        if not re.fullmatch(r"-?\d+", key) or (hi is not None and not 0 <= int(key) <= hi):
            table.error(key, f"enum key {key!r} must be a raw integer value"
                        + (f" 0..{hi}" if hi is not None else ""))
        elif not isinstance(label, str) or not label:
            table.error(key, f"enum label must be a non-empty string, got {label!r}")
        elif label in (lbl for _, lbl in pairs):
            table.error(key, f"duplicate enum label {label!r}")
        elif int(key) in (raw for raw, _ in pairs):
            table.error(key, f"duplicate enum value {int(key)}")
        else:
            pairs.append((int(key), label))
    if not table.data:
        t.error("enum", "enum table is empty")
    return tuple(sorted(pairs))


def _reporting(t: Table, dtype: DataType) -> Reporting:
    interval = t.number("interval")
    interval = 10.0 if interval is None else interval
    ok = interval >= MIN_INTERVAL_S
    if not ok:
        t.error("interval", f"interval {interval} s is too short (minimum {MIN_INTERVAL_S} s)")
    heartbeat = t.number("heartbeat")
    if ok and heartbeat is not None and heartbeat < interval:
        t.error("heartbeat", f"heartbeat {heartbeat} s is shorter than interval {interval} s")
    deadband: Deadband | None = None
    if dtype in NUMERIC:
        absolute = t.number("deadband", lo=0)
        percent = t.number("deadband_percent", lo=0, lo_open=True)
        if t.has("deadband") and t.has("deadband_percent"):
            t.error("deadband_percent", "give deadband or deadband_percent, not both")
        elif absolute is not None:
            deadband = Deadband(absolute)
        elif percent is not None:
            deadband = Deadband(percent, percent=True)
    return Reporting(interval_s=interval, deadband=deadband, heartbeat_s=heartbeat,
                     alarm=t.boolean("alarm"))


def _why(table: RegTable | None, dtype: DataType | None, *, at: bool = False) -> dict[str, str]:
    why = {k: 'only for protocol = "modbus"' for k in MODBUS_KEYS} if at else \
        {k: 'only for protocol = "at"' for k in AT_KEYS}
    why |= {"length": 'only for type = "string"', "bit": 'only for type = "bit"',
            "enum": 'only for type = "enum"', "scale": "only for numeric types",
            "offset": "only for numeric types", "deadband": "only for numeric types",
            "precision": "only for numeric types",
            "deadband_percent": "only for numeric types",
            "valid_range": "only for read-only numeric points (a writable point is plausible "
                           "within its min/max)"}
    if not at:
        why |= {k: 'only for writable (access = "rw") points' for k in ("min", "max", "step")}
        why["allowed"] = 'only for writable (access = "rw") enum points'
        if table is not None and table.is_bits:
            why["order"] = "coil/discrete points are single bits"
    return why


def _check_names(tables: list[Table], problems: Problems) -> None:
    seen: dict[str, Table] = {}
    for t in tables:
        name = t.data.get("name")
        if not isinstance(name, str):
            continue
        if name in seen:
            problems.add(t.at("name"), f"duplicate point name {name!r} (also {seen[name].path})")
        else:
            seen[name] = t


def _check_overlaps(placed: list[tuple[Table, Point]], problems: Problems) -> None:
    done: list[tuple[Table, ModbusPoint]] = []
    for t, q in placed:
        if not isinstance(q, ModbusPoint):
            continue
        for pt, p in done:
            if p.table is not q.table or not (p.address < q.end and q.address < p.end):
                continue
            if p.type is DataType.BIT and q.type is DataType.BIT:
                if p.bit == q.bit:
                    problems.add(t.at("bit"), f"bit {q.bit} of {q.table.value} {q.address} is "
                                 f"already used by {p.name!r} ({pt.path})")
                continue
            problems.add(t.at("address"), f"{q.table.value} {_span(q)} overlaps {p.name!r} "
                         f"({pt.path}, {p.table.value} {_span(p)})")
        done.append((t, q))


def _span(p: ModbusPoint) -> str:
    return str(p.address) if p.count == 1 else f"{p.address}..{p.end - 1}"
