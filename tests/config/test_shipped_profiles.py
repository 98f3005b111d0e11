"""The six shipped profiles load, carry the fixed point names other stages code against, and their
register maps have the properties the docs promise."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edge_agent.profiles.load import load_profile, load_profiles
from edge_agent.profiles.model import (
    Access,
    AtPoint,
    DataType,
    ModbusPoint,
    Order,
    Profile,
    Protocol,
    Table,
)
from edge_agent.profiles.planner import plan
from tests.config.conftest import PROFILES

POINT_NAMES = {
    "street_lamp": {"lamp_on", "dimming", "voltage", "current", "power", "energy", "tilt_angle",
                    "door_open", "tilt_alarm", "cabinet_temp", "light_mode"},
    "pole_environment": {"temperature", "humidity", "pm2_5", "pm10", "noise_db"},
    "water_meter": {"totalizer", "flow_rate", "battery", "tamper", "leak", "reverse_flow",
                    "serial_number", "valve"},
    "manhole_cover": {"tilt_angle", "cover_open", "water_level", "ch4", "h2s", "battery"},
    "pipe_pressure": {"pressure", "temperature", "status"},
    "nbiot_bc95": {"imei", "imsi", "csq", "rsrp", "sinr", "cell_id", "coverage_class",
                   "reg_state"},
}


@pytest.fixture(scope="module")
def shipped() -> dict[str, Profile]:
    return load_profiles(PROFILES)


def mb(profile: Profile, name: str) -> ModbusPoint:
    p = profile.point(name)
    assert isinstance(p, ModbusPoint)
    return p


def at(profile: Profile, name: str) -> AtPoint:
    p = profile.point(name)
    assert isinstance(p, AtPoint)
    return p


def test_fixed_profile_and_point_names(shipped: dict[str, Profile]) -> None:
    # examples/ is a subdirectory and must not be loaded as a profile
    assert set(shipped) == set(POINT_NAMES)
    for name, points in POINT_NAMES.items():
        assert {p.name for p in shipped[name].points} == points, name
        assert shipped[name].source.endswith(f"{name}.toml")


def test_street_lamp_register_map(shipped: dict[str, Profile]) -> None:
    lamp = shipped["street_lamp"]
    assert lamp.component_class == "street_light" and lamp.protocol is Protocol.MODBUS
    on = mb(lamp, "lamp_on")
    assert (on.table, on.type, on.access) == (Table.COIL, DataType.BOOL, Access.RW)
    dim = mb(lamp, "dimming")
    assert dim.table is Table.HOLDING and dim.type is DataType.UINT16 and dim.writable
    assert dim.bounds is not None and (dim.bounds.min, dim.bounds.max, dim.bounds.step) == (
        0, 100, 1)
    energy = mb(lamp, "energy")
    assert (energy.type, energy.order, energy.count) == (DataType.UINT32, Order.CDAB, 2)
    assert lamp.order is Order.ABCD  # the energy word order is a per-point override
    tilt = mb(lamp, "tilt_angle")
    assert tilt.type is DataType.INT16 and tilt.scale != 1.0 and tilt.unit == "deg"
    temp = mb(lamp, "cabinet_temp")
    assert (temp.type, temp.scale, temp.unit) == (DataType.INT16, 0.1, "°C")
    door = mb(lamp, "door_open")
    assert door.table is Table.DISCRETE and door.reporting.alarm
    assert mb(lamp, "tilt_alarm").reporting.alarm
    mode = mb(lamp, "light_mode")
    assert mode.enum == ((0, "auto"), (1, "manual"), (2, "schedule")) and mode.writable
    assert mode.bounds is not None and set(mode.bounds.allowed) == {"auto", "manual", "schedule"}
    for name, unit in (("voltage", "V"), ("current", "A"), ("power", "W")):
        assert mb(lamp, name).unit == unit


def test_water_meter_register_map(shipped: dict[str, Profile]) -> None:
    meter = shipped["water_meter"]
    flow = mb(meter, "flow_rate")
    assert (flow.type, flow.order, flow.unit) == (DataType.FLOAT32, Order.CDAB, "m³/h")
    total = mb(meter, "totalizer")
    assert total.type in (DataType.UINT32, DataType.FLOAT64) and total.unit == "m³"
    flags = [mb(meter, n) for n in ("tamper", "leak", "reverse_flow")]
    assert {(f.table, f.address) for f in flags} == {(flags[0].table, flags[0].address)}
    assert sorted(f.bit for f in flags) == [0, 1, 2]
    assert all(f.type is DataType.BIT and f.reporting.alarm for f in flags)
    sn = mb(meter, "serial_number")
    assert sn.type is DataType.STRING and sn.length > 0
    valve = mb(meter, "valve")
    assert (valve.table, valve.access) == (Table.COIL, Access.RW)


def test_manhole_cover_is_strict_and_planner_never_spans_its_gaps(
        shipped: dict[str, Profile]) -> None:
    cover = shipped["manhole_cover"]
    assert cover.max_gap == 0
    mapped = {(p.table, a) for p in cover.modbus_points for a in range(p.address, p.end)}
    requests = plan(cover.modbus_points, max_gap=cover.max_gap)
    assert len(requests) > 1  # the map has gaps, so one read cannot cover it
    for r in requests:
        assert all((r.table, a) in mapped for a in range(r.address, r.end)), r
    assert mb(cover, "cover_open").reporting.alarm


def test_every_modbus_profile_plans_and_fits_the_address_space(
        shipped: dict[str, Profile]) -> None:
    for profile in shipped.values():
        if profile.protocol is not Protocol.MODBUS:
            continue
        requests = plan(profile.modbus_points, max_gap=profile.max_gap)
        covered = [p.name for r in requests for p in r.points]
        assert sorted(covered) == sorted(p.name for p in profile.modbus_points)
        assert all(p.end <= 65536 for p in profile.modbus_points)


def test_pipe_pressure_and_environment(shipped: dict[str, Profile]) -> None:
    pressure = mb(shipped["pipe_pressure"], "pressure")
    assert (pressure.type, pressure.unit) == (DataType.FLOAT32, "bar")
    status = mb(shipped["pipe_pressure"], "status")
    assert status.type is DataType.ENUM and status.enum[0] == (0, "ok")
    env = shipped["pole_environment"]
    assert env.component_class == "environment"
    assert mb(env, "temperature").type is DataType.INT16  # sub-zero temperatures


# Real BC95 response lines (Quectel BC95 AT command manual examples).
BC95_LINES = {
    "imei": ("+CGSN:490154203237518", "490154203237518"),
    "imsi": ("460001357924680", "460001357924680"),
    "csq": ("+CSQ:22,99", "22"),
    "rsrp": ("Signal power:-767", "-767"),
    "sinr": ("SNR:72", "72"),
    "cell_id": ("Cell ID:21590089", "21590089"),
    "coverage_class": ("ECL:1", "1"),
    "reg_state": ("+CEREG:0,1", "1"),
}


def test_nbiot_patterns_match_real_module_responses(shipped: dict[str, Profile]) -> None:
    modem = shipped["nbiot_bc95"]
    assert modem.protocol is Protocol.AT and modem.component_class == "nbiot_module"
    assert at(modem, "imei").command == "AT+CGSN=1"
    assert at(modem, "imsi").command == "AT+CIMI"
    assert at(modem, "csq").command == "AT+CSQ"
    for name in ("rsrp", "sinr", "cell_id", "coverage_class"):
        assert at(modem, name).command == "AT+NUESTATS"
    assert at(modem, "reg_state").command == "AT+CEREG?"
    assert dict(at(modem, "reg_state").enum)[1] == "home"
    for name, (line, want) in BC95_LINES.items():
        point = at(modem, name)
        m = re.search(point.pattern, line)
        assert m is not None, (name, line)
        group = int(point.group) if point.group.isdigit() else point.group
        assert m.group(group) == want, name
        # and the pattern does not also match another command's answer
        others = [v[0] for k, v in BC95_LINES.items() if k != name]
        assert not any(re.search(point.pattern, o) for o in others), name


def test_docs_worked_example_is_a_valid_profile(tmp_path: Path) -> None:
    docs = (PROFILES.parent / "docs" / "profiles.md").read_text("utf-8")
    block = docs.split("```toml\n", 1)[1].split("```", 1)[0]  # the first TOML block
    path = tmp_path / "ps2.toml"
    path.write_text(block, encoding="utf-8")
    profile = load_profile(path)
    assert profile.point("energy").order is Order.CDAB  # type: ignore[union-attr]
    reads = [(r.table.value, r.address, r.count) for r in
             plan(profile.modbus_points, max_gap=profile.max_gap)]
    assert reads == [("coil", 0, 1), ("holding", 0, 2), ("input", 0, 6)]
    assert "(`input 0+6`, `holding 0+2`, `coil 0+1`)" in docs


def test_physical_quantities_declare_plausible_ranges(shipped: dict[str, Profile]) -> None:
    """Every read-only numeric measurement has a plausible range (what a reading outside is
    published as out_of_range against); identifiers and the signal quality code do not."""
    from edge_agent.profiles.model import plausible_range

    assert plausible_range(shipped["street_lamp"].point("dimming")) == (0, 100)
    assert plausible_range(shipped["street_lamp"].point("tilt_angle")) == (-45, 45)
    assert plausible_range(shipped["water_meter"].point("battery")) == (0, 100)
    assert plausible_range(shipped["manhole_cover"].point("battery")) == (0, 100)
    assert plausible_range(shipped["water_meter"].point("totalizer")) == (0, 999999.999)
    assert plausible_range(shipped["pipe_pressure"].point("pressure")) == (-1, 25)
    unchecked = {("nbiot_bc95", "csq")}  # 99 = "not known": a code, not a measurement
    for prof in shipped.values():
        for p in prof.points:
            numeric = p.type.value.startswith(("int", "uint", "float"))
            if numeric and (prof.name, p.name) not in unchecked:
                assert plausible_range(p) is not None, (prof.name, p.name)
