"""Fixtures for the profile / agent.toml loader tests: valid documents as dicts that a test
breaks in one place and writes to a real file."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edge_agent.errors import ConfigError, Problem
from tests.config.tomlw import dumps

ROOT = Path(__file__).resolve().parents[2]
PROFILES = ROOT / "device_profiles"
EXAMPLE = PROFILES / "examples" / "street-gateway.toml"

Doc = dict[str, Any]
Writer = Callable[[str, Doc], Path]

MODBUS_PROFILE: Doc = {
    "vendor": "Acme",
    "model": "T-1",
    "class": "generic",
    "protocol": "modbus",
    "byte_order": "ABCD",
    "max_gap": 8,
    "points": [
        {"name": "temp", "table": "input", "address": 0, "type": "int16", "scale": 0.1,
         "unit": "°C", "interval": 10, "deadband": 0.5, "heartbeat": 300},
        {"name": "energy", "table": "input", "address": 4, "type": "uint32", "order": "CDAB",
         "unit": "kWh"},
        {"name": "flag_a", "table": "input", "address": 6, "type": "bit", "bit": 0, "alarm": True},
        {"name": "flag_b", "table": "input", "address": 6, "type": "bit", "bit": 1, "alarm": True},
        {"name": "setpoint", "table": "holding", "address": 0, "type": "uint16", "access": "rw",
         "min": 0, "max": 100, "step": 1},
        {"name": "mode", "table": "holding", "address": 1, "type": "enum", "access": "rw",
         "enum": {"0": "auto", "1": "manual"}, "allowed": ["auto", "manual"]},
        {"name": "relay", "table": "coil", "address": 0, "access": "rw"},
        {"name": "label", "table": "holding", "address": 10, "type": "string", "length": 4},
    ],
}

AT_PROFILE: Doc = {
    "vendor": "Acme",
    "model": "NB-1",
    "class": "nbiot_module",
    "protocol": "at",
    "points": [
        {"name": "csq", "command": "AT+CSQ", "pattern": r"^\+CSQ:(\d+),(\d+)$", "group": "1",
         "type": "uint16"},
        {"name": "reg", "command": "AT+CEREG?", "pattern": r"^\+CEREG:\d,(?P<stat>\d)",
         "group": "stat", "type": "enum", "enum": {"1": "home", "5": "roaming"}},
    ],
}

CONFIG: Doc = {
    "gateway_id": "gw-test",
    "profiles_dir": str(PROFILES),
    "state_dir": "state",
    "runtime_dir": "run",
    "buses": [
        {"name": "line1", "kind": "rtu", "port": "/dev/ttyUSB0", "baud": 9600},
        {"name": "plc", "kind": "tcp", "host": "127.0.0.1", "port": 1502},
        {"name": "modem", "kind": "at", "port": "/dev/ttyUSB1"},
    ],
    "devices": [
        {"name": "lamp1", "profile": "street_lamp", "bus": "line1", "unit_id": 1,
         "tags": {"pole": "P1"}},
        {"name": "lamp2", "profile": "street_lamp", "bus": "line1", "unit_id": 2},
        {"name": "press", "profile": "pipe_pressure", "bus": "plc", "unit_id": 0},
        {"name": "nb", "profile": "nbiot_bc95", "bus": "modem"},
    ],
    "keys": {"signing_key": "keys/signing.key"},
}


@pytest.fixture
def modbus_profile() -> Doc:
    return copy.deepcopy(MODBUS_PROFILE)


@pytest.fixture
def at_profile() -> Doc:
    return copy.deepcopy(AT_PROFILE)


@pytest.fixture
def config() -> Doc:
    return copy.deepcopy(CONFIG)


@pytest.fixture
def write(tmp_path: Path) -> Writer:
    """write("dir/name.toml", doc) -> the path of a real file under tmp_path."""

    def _write(rel: str, doc: Doc) -> Path:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dumps(doc), encoding="utf-8")
        return path

    return _write


def problems(fn: Callable[[], object]) -> list[Problem]:
    """The problems of the ConfigError ``fn`` must raise."""
    with pytest.raises(ConfigError) as info:
        fn()
    assert info.value.problems, "ConfigError without problems"
    return info.value.problems


def paths(found: list[Problem]) -> list[str]:
    return [p.path for p in found]
