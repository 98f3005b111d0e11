"""Cross-checks between buses, devices and profiles; and a broken config + broken profile
directory that must report every problem in one ConfigError."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from edge_agent.config.load import load_config
from edge_agent.errors import Problem
from tests.config.conftest import MODBUS_PROFILE, PROFILES, Doc, Writer, paths, problems


def fails(write: Writer, doc: Doc) -> list[Problem]:
    path = write("etc/agent.toml", doc)
    return problems(lambda: load_config(path))


def dev(i: int, **kv: Any) -> Any:
    def mutate(doc: Doc) -> None:
        doc["devices"][i].update(kv)
    return mutate


def bus(i: int, **kv: Any) -> Any:
    def mutate(doc: Doc) -> None:
        doc["buses"][i].update(kv)
    return mutate


def add_device(**kv: Any) -> Any:
    def mutate(doc: Doc) -> None:
        doc["devices"].append(kv)
    return mutate


def add_bus(**kv: Any) -> Any:
    def mutate(doc: Doc) -> None:
        doc["buses"].append(kv)
    return mutate


CASES = [
    (dev(0, profile="street_lamps"), "devices[0].profile", "unknown profile 'street_lamps'",
     "did you mean 'street_lamp'?"),
    (dev(0, bus="line2"), "devices[0].bus", "unknown bus 'line2'", "did you mean 'line1'?"),
    (dev(3, bus="plc", unit_id=7), "devices[3].bus",
     "profile 'nbiot_bc95' speaks at but bus 'plc' is kind tcp (needs a at bus)", ""),
    (dev(2, bus="modem"), "devices[2].bus",
     "profile 'pipe_pressure' speaks modbus but bus 'modem' is kind at (needs a tcp or rtu bus)",
     ""),
    (dev(1, unit_id=1), "devices[1].unit_id",
     "unit id 1 on bus 'line1' is already used by 'lamp1' (devices[0])", ""),
    (dev(0, unit_id=0), "devices[0].unit_id", "1..247 on RTU (0 is broadcast)", ""),
    (dev(0, unit_id=248), "devices[0].unit_id", "out of range", ""),
    (dev(2, unit_id=248), "devices[2].unit_id", "0..247 on TCP", ""),
    (dev(3, unit_id=1), "devices[3].unit_id", "unit_id does not apply", ""),
    (add_device(name="nb2", profile="nbiot_bc95", bus="modem"), "devices[4].bus",
     "at bus 'modem' carries one module and is already used by 'nb' (devices[3])", ""),
    (add_device(name="lamp1", profile="street_lamp", bus="line1", unit_id=9), "devices[4].name",
     "duplicate device name 'lamp1' (also devices[0])", ""),
    (add_bus(name="plc", kind="tcp", host="10.0.0.2"), "buses[3].name",
     "duplicate bus name 'plc' (also buses[1])", ""),
    (add_bus(name="line2", kind="rtu", port="/dev/ttyUSB0"), "buses[3].port",
     "serial port '/dev/ttyUSB0' is already used by buses[0]", ""),
    (dev(0, interval=600), "devices[0].interval",
     "interval 600.0 s is longer than the heartbeat of lamp_on, voltage, current, power, dimming",
     ""),
    (dev(3, max_gap=2), "devices[3].max_gap", "does not apply to an at profile", ""),
    (bus(0, baud=1200, timeout_max=0.05), "buses[0].timeout_max",
     "timeout_max 0.05 s is shorter than the longest planned read of 'lamp1' (10 x input", ""),
]


@pytest.mark.parametrize(("mutate", "path", "text", "hint"), CASES,
                         ids=[c[1] + ":" + c[2][:20] for c in CASES])
def test_cross_check(write: Writer, config: Doc, mutate: Any, path: str, text: str,
                     hint: str) -> None:
    mutate(config)
    found = fails(write, config)
    # the timeout check fires once per device it is too short for (lamp1 and lamp2)
    want = [path] * (2 if path.endswith("timeout_max") else 1)
    assert paths(found) == want, "\n".join(map(str, found))
    assert text in found[0].message and found[0].hint == hint


def test_same_unit_id_on_different_buses_is_fine(write: Writer, config: Doc) -> None:
    config["devices"][2]["unit_id"] = 1  # lamp1 is unit 1 on line1, press is unit 1 on plc
    cfg = load_config(write("a.toml", config))
    assert [d.unit_id for d in cfg.devices[:3]] == [1, 2, 1]


def test_strict_profile_cannot_be_widened_by_device(write: Writer, config: Doc) -> None:
    config["devices"].append({"name": "cover", "profile": "manhole_cover", "bus": "line1",
                              "unit_id": 9, "max_gap": 0})
    assert load_config(write("a.toml", config)).devices[4].max_gap == 0
    config["devices"][4]["max_gap"] = 4
    found = fails(write, config)
    assert paths(found) == ["devices[4].max_gap"] and "max_gap = 0" in found[0].message


def test_broken_config_and_profile_dir_report_everything_at_once(
        write: Writer, config: Doc, tmp_path: Path) -> None:
    # a profile directory: one good profile, one broken, copies of two shipped ones
    good = copy.deepcopy(MODBUS_PROFILE)
    write("profiles/meter.toml", good)
    bad = copy.deepcopy(MODBUS_PROFILE)
    bad["points"][0]["type"] = "int61"
    bad["points"][5]["allowed"] = ["auto", "boost"]
    bad["points"][7]["address"] = 65534
    write("profiles/sensor.toml", bad)
    for name in ("street_lamp", "nbiot_bc95"):
        (tmp_path / "profiles" / f"{name}.toml").write_bytes(
            (PROFILES / f"{name}.toml").read_bytes())

    config["profiles_dir"] = "../profiles"
    config["gatway_id"] = config.pop("gateway_id")
    config["buses"][1]["kind"] = "tcpip"
    config["buses"].append({"name": "modem2", "kind": "at", "port": "/dev/ttyUSB2"})
    config["buses"].append({"name": "spare", "kind": "rtu", "port": "/dev/ttyS0", "baud": 9601})
    config["devices"] = [
        {"name": "lamp1", "profile": "street_lamp", "bus": "line1", "unit_id": 1},
        {"name": "lamp2", "profile": "street_lamp", "bus": "line1", "unit_id": 1},
        {"name": "s1", "profile": "sensor", "bus": "line1", "unit_id": 3},  # broken profile
        {"name": "m1", "profile": "meterr", "bus": "line1", "unit_id": 4},
        {"name": "m2", "profile": "meter", "bus": "lin1", "unit_id": 5},
        {"name": "nb", "profile": "nbiot_bc95", "bus": "modem", "unit_id": 1},
        {"name": "nb2", "profile": "nbiot_bc95", "bus": "plc"},  # plc is broken: no complaint
        {"name": "lamp3", "profile": "street_lamp", "bus": "modem2"},
        {"name": "lamp4", "profile": "street_lamp", "bus": "spare", "unit_id": 0},
    ]
    config["uplink"] = {"host": "b", "tls": {"ca_file": "missing-ca.pem"}, "inflght": 3}
    config["outbox"] = {"cap": "256 MiBs"}

    found = fails(write, config)
    located = [(Path(p.file).name, p.path) for p in found]
    assert located == [
        ("agent.toml", "gateway_id"),
        ("agent.toml", "buses[1].kind"),
        ("agent.toml", "buses[4].baud"),
        ("agent.toml", "uplink.tls.ca_file"),
        ("agent.toml", "uplink.inflght"),
        ("agent.toml", "outbox.cap"),
        ("agent.toml", "gatway_id"),
        ("sensor.toml", "points[0].type"),
        ("sensor.toml", "points[5].allowed[1]"),
        ("sensor.toml", "points[7].address"),
        ("agent.toml", "devices[1].unit_id"),
        ("agent.toml", "devices[3].profile"),
        ("agent.toml", "devices[4].bus"),
        ("agent.toml", "devices[5].unit_id"),
        ("agent.toml", "devices[7].bus"),
    ], "\n".join(map(str, found))
    hints = {p.path: p.hint for p in found}
    assert hints["gatway_id"] == "did you mean 'gateway_id'?"
    assert hints["devices[3].profile"] == "did you mean 'meter'?"
    assert hints["devices[4].bus"] == "did you mean 'line1'?"
    assert hints["uplink.inflght"] == "did you mean 'inflight'?"
    assert hints["buses[1].kind"] == "did you mean 'tcp'?"
