"""Whatever a profile or config file holds, the loaders answer with a result or a ConfigError whose
problems point at real key paths - never with another exception."""

from __future__ import annotations

import copy
import re
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.config.load import load_config
from edge_agent.errors import ConfigError
from edge_agent.profiles.load import POINT_KEYS, TOP_KEYS, parse_profile
from edge_agent.profiles.model import Profile
from tests.config.conftest import AT_PROFILE, CONFIG, MODBUS_PROFILE
from tests.config.tomlw import dumps

scalars = st.one_of(
    st.integers(-70000, 70000), st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(), st.text(max_size=12), st.sampled_from(
        ["holding", "coil", "rw", "enum", "bit", "string", "CDAB", "AT+X", "(", "(\\d+)", "at",
         "modbus", "1", "0", "tcp", "rtu", "street_lamp", "line1"]))
values = st.one_of(scalars, st.lists(scalars, max_size=3),
                   st.dictionaries(st.text(max_size=4), scalars, max_size=3))
point_keys = st.sampled_from([*POINT_KEYS, "bogus"])
Mutation = tuple[int, str, Any]
mutations = st.lists(st.tuples(st.integers(-1, 8), point_keys | st.sampled_from(TOP_KEYS),
                               values), min_size=1, max_size=4)
PATH_RE = re.compile(r"^([a-z_]+)(\[\d+\])?(\.[^.\[]+(\[\d+\])?)*$")


def _apply(doc: dict[str, Any], muts: list[Mutation]) -> None:
    for i, key, value in muts:
        points = doc.get("points")
        if not isinstance(points, list) or i < 0 or i >= len(points) \
                or not isinstance(points[i], dict):
            doc[key] = value
        else:
            points[i][key] = value


@settings(max_examples=300, deadline=None)
@given(base=st.sampled_from([MODBUS_PROFILE, AT_PROFILE]), muts=mutations)
def test_profile_loader_never_crashes(base: dict[str, Any], muts: list[Mutation]) -> None:
    doc = copy.deepcopy(base)
    _apply(doc, muts)
    try:
        result = parse_profile(doc, name="fuzz", source="fuzz.toml")
    except ConfigError as exc:
        assert exc.problems
        for p in exc.problems:
            assert p.file == "fuzz.toml" and p.message
            assert p.path == "" or PATH_RE.match(p.path), p.path
    else:
        assert isinstance(result, Profile) and result.points


config_keys = st.sampled_from(["gateway_id", "profiles_dir", "buses", "devices", "uplink",
                               "batch", "outbox", "keys", "name", "kind", "port", "baud",
                               "unit_id", "bus", "profile", "tags", "interval", "host"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(muts=st.lists(st.tuples(st.integers(-1, 3), config_keys, values), min_size=1,
                     max_size=3),
       section=st.sampled_from(["buses", "devices"]))
def test_config_loader_never_crashes(muts: list[Mutation], section: str) -> None:
    doc = copy.deepcopy(CONFIG)
    for i, key, value in muts:
        entries = doc.get(section)
        if not isinstance(entries, list) or i < 0 or i >= len(entries) \
                or not isinstance(entries[i], dict):
            doc[key] = value
        else:
            doc[section][i][key] = value
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "agent.toml"
        try:
            path.write_text(dumps(doc), encoding="utf-8")
        except TypeError:
            return  # not representable in TOML by the test writer
        try:
            cfg = load_config(path)
        except ConfigError as exc:
            assert exc.problems and all(p.message for p in exc.problems)
        else:
            assert cfg.devices and cfg.buses
