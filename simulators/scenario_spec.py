"""Scenario files (``simulators/scenarios/*.toml``): what to simulate, read into plain data.

Format (every key is checked; mistakes are reported with file and key path)::

    description = "..."
    seed = 1                     # default seed; `edge-sim run --seed` overrides
    speed = 1.0                  # simulated seconds per real second
    start_hour = 18.0            # simulated time of day at start
    profiles_dir = "profiles"    # optional, relative to this file; default: the shipped ones

    [[tcp]]                      # `count` endpoints named <name>-01.., each serving every unit
    name = "pole"
    count = 20
    units = [{ name = "lamp", profile = "street_lamp", unit_id = 1 }, ...]  # device lamp-01..

    [[rtu]]                      # one RS-485 line; units get consecutive ids from first_unit
    name = "rs485-water"
    baud = 9600
    parity = "N"
    stopbits = 1
    turnaround_ms = 5
    units = [{ name = "meter", profile = "water_meter", count = 8, first_unit = 1 }]

    [[at]]                       # one NB-IoT module on its own serial line
    name = "nbiot"
    device = "nbiot-1"
    profile = "nbiot_bc95"

    [params]                     # behaviour model parameters, by device name or unit name
    meter-03 = { leak_m3h = 0.04 }
    manhole = { rain_mm_h = 12.0 }
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_agent.errors import ConfigError, Problem
from edge_agent.profiles.fields import Problems, Table, read_toml
from edge_agent.profiles.shipped import shipped_dir

SCENARIO_DIR = Path(__file__).parent / "scenarios"
TOP_KEYS = ("description", "seed", "speed", "start_hour", "profiles_dir", "tcp", "rtu", "at",
            "params")


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    name: str
    profile: str
    unit_id: int
    template: str  # the unit name it was generated from, e.g. "lamp" for lamp-07


@dataclass(frozen=True, slots=True)
class EndpointSpec:
    name: str
    devices: tuple[DeviceSpec, ...]


@dataclass(frozen=True, slots=True)
class LineSpec:
    name: str
    devices: tuple[DeviceSpec, ...]
    baud: int = 9600
    parity: str = "N"
    stopbits: int = 1
    turnaround_ms: float = 5.0


@dataclass(frozen=True, slots=True)
class ModemSpec:
    name: str  # the serial bus
    device: str
    profile: str


@dataclass(frozen=True, slots=True)
class ScenarioSpec:
    name: str
    source: Path
    description: str
    seed: int
    speed: float
    start_hour: float
    profiles_dir: Path
    endpoints: tuple[EndpointSpec, ...]
    lines: tuple[LineSpec, ...]
    modems: tuple[ModemSpec, ...]
    params: dict[str, dict[str, Any]] = field(default_factory=dict)

    def device_params(self, dev: DeviceSpec) -> dict[str, Any]:
        return {**self.params.get(dev.template, {}), **self.params.get(dev.name, {})}

    @property
    def device_count(self) -> int:
        return (sum(len(e.devices) for e in self.endpoints)
                + sum(len(li.devices) for li in self.lines) + len(self.modems))


def available() -> list[str]:
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.toml"))


def resolve(name_or_path: str) -> Path:
    """A shipped scenario name (``street``) or a path to a scenario file."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        return path
    shipped = SCENARIO_DIR / f"{name_or_path}.toml"
    if shipped.exists():
        return shipped
    raise ConfigError([Problem(name_or_path, "", "no such scenario",
                               f"shipped: {', '.join(available())}")])


def _numbered(name: str, i: int, count: int) -> str:
    return f"{name}-{i + 1:0{max(2, len(str(count)))}d}"


def _units(t: Table, *, line: bool) -> list[tuple[str, str, int, int]]:
    """(name, profile, first unit id, count) per ``units`` entry."""
    out: list[tuple[str, str, int, int]] = []
    for u in t.tables("units"):
        name = u.string("name", required=True) or "?"
        profile = u.string("profile", required=True) or "?"
        if line:
            first = u.integer("first_unit", 1, lo=1, hi=247) or 1
            count = u.integer("count", 1, lo=1, hi=247) or 1
            if first + count - 1 > 247:
                u.error("count", f"unit ids {first}..{first + count - 1} go past 247")
            u.finish(("name", "profile", "first_unit", "count"))
        else:
            first, count = u.integer("unit_id", 1, lo=0, hi=255) or 0, 1
            u.finish(("name", "profile", "unit_id"))
        out.append((name, profile, first, count))
    if not out:
        t.error("units", "at least one unit is needed")
    return out


def load_scenario(name_or_path: str) -> ScenarioSpec:
    path = resolve(name_or_path)
    problems = Problems(str(path))
    data = read_toml(path, problems)
    if data is None:
        raise ConfigError(problems.items)
    top = Table(data, "", problems)
    description = top.string("description", "") or ""
    seed = top.integer("seed", 0, lo=0) or 0
    speed = top.number("speed", 1.0, lo=0) or 0.0
    start_hour = top.number("start_hour", 6.0, lo=0, hi=24) or 0.0
    pdir = top.string("profiles_dir")
    profiles_dir = shipped_dir() if pdir is None else (path.parent / pdir).resolve()
    endpoints: list[EndpointSpec] = []
    for t in top.tables("tcp"):
        name = t.string("name", required=True) or "?"
        count = t.integer("count", 1, lo=1, hi=5000) or 1
        units = _units(t, line=False)
        t.finish(("name", "count", "units"))
        for i in range(count):
            endpoints.append(EndpointSpec(_numbered(name, i, count), tuple(
                DeviceSpec(_numbered(u, i, count), prof, uid, u) for u, prof, uid, _ in units)))
    lines: list[LineSpec] = []
    for t in top.tables("rtu"):
        name = t.string("name", required=True) or "?"
        devs = [DeviceSpec(_numbered(u, k, n), prof, first + k, u)
                for u, prof, first, n in _units(t, line=True) for k in range(n)]
        lines.append(LineSpec(name, tuple(devs), baud=t.integer("baud", 9600, lo=300) or 9600,
                              parity=t.one_of("parity", ("N", "E", "O"), "N") or "N",
                              stopbits=t.integer("stopbits", 1, lo=1, hi=2) or 1,
                              turnaround_ms=t.number("turnaround_ms", 5.0, lo=0) or 0.0))
        t.finish(("name", "baud", "parity", "stopbits", "turnaround_ms", "units"))
    modems: list[ModemSpec] = []
    for t in top.tables("at"):
        modems.append(ModemSpec(t.string("name", required=True) or "?",
                                t.string("device", required=True) or "?",
                                t.string("profile", "nbiot_bc95") or "nbiot_bc95"))
        t.finish(("name", "device", "profile"))
    params: dict[str, dict[str, Any]] = {}
    ptable = top.table("params")
    if ptable is not None:
        for key in list(ptable.data):
            sub = ptable.table(key)
            if sub is not None:
                params[key] = dict(sub.data)
    top.finish(TOP_KEYS)
    _check_names(endpoints, lines, modems, params, problems)
    if problems.items:
        raise ConfigError(problems.items)
    return ScenarioSpec(path.stem, path, description, seed, speed, start_hour, profiles_dir,
                        tuple(endpoints), tuple(lines), tuple(modems), params)


def _check_names(endpoints: list[EndpointSpec], lines: list[LineSpec], modems: list[ModemSpec],
                 params: dict[str, dict[str, Any]], problems: Problems) -> None:
    names: set[str] = set()
    templates: set[str] = set()
    groups: list[EndpointSpec | LineSpec] = [*endpoints, *lines]
    for group in groups:
        for i, d in enumerate(group.devices):
            if d.name in names:
                problems.add(f"{group.name}.units[{i}]", f"device name {d.name!r} used twice")
            names.add(d.name)
            templates.add(d.template)
        uids = [d.unit_id for d in group.devices]
        if len(set(uids)) != len(uids):
            problems.add(group.name, f"unit ids repeat on {group.name}: {sorted(uids)}")
    names.update(m.device for m in modems)
    buses = [g.name for g in groups] + [m.name for m in modems]
    if len(set(buses)) != len(buses):
        problems.add("", "endpoint/line names repeat")
    for key in params:
        if key not in names and key not in templates:
            problems.add(f"params.{key}", f"no device or unit named {key!r}")
