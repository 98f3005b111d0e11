"""Every profile check, one broken thing at a time, and a broken profile reporting all at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edge_agent.errors import Problem
from edge_agent.profiles.load import load_profile, load_profiles, parse_profile
from edge_agent.profiles.model import plausible_range
from tests.config.conftest import Doc, Writer, paths, problems


def fails(write: Writer, doc: Doc) -> list[Problem]:
    path = write("profiles/dev.toml", doc)
    return problems(lambda: load_profile(path))


def only(found: list[Problem]) -> Problem:
    assert len(found) == 1, "\n".join(map(str, found))
    return found[0]


def test_valid_fixtures_load(write: Writer, modbus_profile: Doc, at_profile: Doc) -> None:
    mb = load_profile(write("p/mb.toml", modbus_profile))
    assert mb.name == "mb" and len(mb.points) == 8
    at = load_profile(write("p/at.toml", at_profile))
    assert at.point("reg").enum == ((1, "home"), (5, "roaming"))


# (mutation, expected key path, text the message must contain, expected hint or "")
def _set(i: int, **kv: Any) -> Any:
    def mutate(doc: Doc) -> None:
        doc["points"][i].update(kv)
    return mutate


def _drop(i: int, key: str) -> Any:
    def mutate(doc: Doc) -> None:
        del doc["points"][i][key]
    return mutate


def _top(**kv: Any) -> Any:
    def mutate(doc: Doc) -> None:
        doc.update(kv)
    return mutate


MODBUS_CASES = [
    (_top(maxgap=3), "maxgap", "unknown key", "did you mean 'max_gap'?"),
    (_top(**{"class": "street_lite"}), "class", "is not one of", "did you mean 'street_light'?"),
    (_top(protocol="modbs"), "protocol", "is not one of", "did you mean 'modbus'?"),
    (_top(byte_order="ABDC"), "byte_order", "is not one of", "did you mean 'BADC'?"),
    (_top(max_gap=-1), "max_gap", "out of range", ""),
    (_top(points=[]), "points", "at least one", ""),
    (_set(0, unti="V"), "points[0].unti", "unknown key", "did you mean 'unit'?"),
    (_set(0, table="holdin"), "points[0].table", "is not one of", "did you mean 'holding'?"),
    (_set(0, type="unit16"), "points[0].type", "is not one of", "did you mean 'uint16'?"),
    (_set(0, length=2), "points[0].length", 'only for type = "string"', ""),
    (_set(0, bit=2), "points[0].bit", 'only for type = "bit"', ""),
    (_set(0, min=0), "points[0].min", "only for writable", ""),
    (_set(0, command="AT"), "points[0].command", 'only for protocol = "at"', ""),
    (_set(0, address="0"), "points[0].address", "expected an integer", ""),
    (_set(0, scale=0), "points[0].scale", "must not be 0", ""),
    (_set(0, access="rw"), "points[0].access", "read-only", ""),
    (_set(6, type="uint16"), "points[6].type", 'must be "bool"', ""),
    (_set(4, type="bool"), "points[4].type", 'use type "bit"', ""),
    (_set(0, name="Temp"), "points[0].name", "not a valid point name", ""),
    (_set(1, name="temp"), "points[1].name", "duplicate point name 'temp' (also points[0])", ""),
    (_set(0, type="uint32", address=3), "points[1].address",
     "input 4..5 overlaps 'temp' (points[0], input 3..4)", ""),
    (_set(3, bit=0), "points[3].bit", "bit 0 of input 6 is already used by 'flag_a'", ""),
    (_drop(4, "max"), "points[4]", "writable point has no bounds", ""),
    (_drop(5, "allowed"), "points[5]", "writable enum point has no bounds", ""),
    (_set(4, min=200), "points[4].min", "min 200.0 is greater than max 100.0", ""),
    (_set(4, step=0), "points[4].step", "out of range", ""),
    (_set(4, max=70000), "points[4].max", "a uint16 with scale 1.0 and offset 0.0 holds 0..65535",
     ""),
    (_set(4, min=-1, scale=0.1), "points[4].min", "holds 0..6553.5", ""),
    (_set(5, enum={"0": "auto", "00": "manual"}), "points[5].enum.00", "duplicate enum value 0",
     ""),
    (_set(5, allowed=["auto", "manaul"]), "points[5].allowed[1]", "not a label of enum",
     "did you mean 'manual'?"),
    (_set(5, enum={"x": "auto"}), "points[5].enum.x", "must be a raw integer", ""),
    (_set(5, enum={"0": "auto", "1": "auto"}), "points[5].enum.1", "duplicate enum label", ""),
    (_drop(5, "enum"), "points[5].enum", 'needs enum = {', ""),
    (_set(7, address=65533), "points[7].address", "address 65533 + 4 registers runs past 65535",
     ""),
    (_set(1, address=65535), "points[1].address", "runs past 65535", ""),
    (_drop(7, "length"), "points[7].length", "required key missing", ""),
    (_set(2, bit=16), "points[2].bit", "out of range 0..15", ""),
    (_set(0, interval=0), "points[0].interval", "too short (minimum 0.05 s)", ""),
    (_set(0, interval=-5), "points[0].interval", "too short", ""),
    (_set(0, interval=0.01), "points[0].interval", "too short", ""),
    (_set(0, heartbeat=5), "points[0].heartbeat", "shorter than interval 10.0 s", ""),
    (_set(0, deadband_percent=5), "points[0].deadband_percent", "not both", ""),
    (_set(0, deadband=-1), "points[0].deadband", "out of range", ""),
    (_set(2, deadband=1), "points[2].deadband", "only for numeric types", ""),
    (_set(7, access="rw"), "points[7].access", "cannot be written", ""),
    (_set(6, order="CDAB"), "points[6].order", "single bits", ""),
    (_set(0, alarm="yes"), "points[0].alarm", "expected true or false", ""),
    (_set(0, valid_range=[50, -10]), "points[0].valid_range", "lo 50 must be below hi -10", ""),
    (_set(0, valid_range=[5, 5.0]), "points[0].valid_range", "must be below", ""),
    (_set(0, valid_range=[0]), "points[0].valid_range", "expected [lo, hi], two finite numbers",
     ""),
    (_set(0, valid_range=["0", 10]), "points[0].valid_range", "expected [lo, hi]", ""),
    (_set(0, valid_range=[True, 10]), "points[0].valid_range", "expected [lo, hi]", ""),
    (_set(0, valid_range={"lo": 0, "hi": 1}), "points[0].valid_range", "expected [lo, hi]", ""),
    (_set(0, valid_range=[-4000, 10]), "points[0].valid_range[0]",
     "-4000 can never be read: a int16 with scale 0.1 and offset 0.0 holds -3276.8..3276.7", ""),
    (_set(0, valid_range=[-40, 3200], offset=-100), "points[0].valid_range[1]",
     "holds -3376.8..3176.7", ""),
    (_set(1, valid_range=[0, 5e9]), "points[1].valid_range[1]", "a uint32 with scale 1.0", ""),
    (_set(2, valid_range=[0, 1]), "points[2].valid_range", "only for read-only numeric points",
     ""),
    (_set(4, valid_range=[0, 50]), "points[4].valid_range",
     "only for read-only numeric points (a writable point is plausible within its min/max)", ""),
    (_set(7, valid_range=[0, 1]), "points[7].valid_range", "only for read-only numeric", ""),
]


@pytest.mark.parametrize(("mutate", "path", "text", "hint"), MODBUS_CASES,
                         ids=[c[1] + ":" + c[2][:24] for c in MODBUS_CASES])
def test_modbus_profile_check(write: Writer, modbus_profile: Doc, mutate: Any, path: str,
                              text: str, hint: str) -> None:
    mutate(modbus_profile)
    p = only(fails(write, modbus_profile))
    assert (p.path, p.hint) == (path, hint)
    assert text in p.message
    assert p.file.endswith("dev.toml")
    assert str(p).startswith(f"{p.file}: {path}: ")


def test_bits_sharing_one_status_register_are_fine(write: Writer, modbus_profile: Doc) -> None:
    prof = load_profile(write("p/ok.toml", modbus_profile))
    a, b = prof.point("flag_a"), prof.point("flag_b")
    assert (a.address, a.bit) == (6, 0) and (b.address, b.bit) == (6, 1)  # type: ignore[union-attr]


def test_bit_and_whole_register_may_not_share(write: Writer, modbus_profile: Doc) -> None:
    modbus_profile["points"].append({"name": "status", "table": "input", "address": 6,
                                     "type": "uint16"})
    found = fails(write, modbus_profile)
    assert paths(found) == ["points[8].address", "points[8].address"]
    assert "overlaps 'flag_a'" in found[0].message and "overlaps 'flag_b'" in found[1].message


AT_CASES = [
    (_set(0, pattern="^(+CSQ"), "points[0].pattern", "invalid regex at position", ""),
    (_set(0, group="3"), "points[0].group", "pattern has 2 group(s), no group 3", ""),
    (_set(1, group="stats"), "points[1].group", "no group named 'stats'", "did you mean 'stat'?"),
    (_set(0, command="CSQ"), "points[0].command", "not an AT command", ""),
    (_set(0, type="bit"), "points[0].type", "is not one of", ""),
    (_set(0, table="input"), "points[0].table", 'only for protocol = "modbus"', ""),
    (_drop(0, "pattern"), "points[0].pattern", "required key missing", ""),
    (_top(max_gap=0), "max_gap", 'only for protocol = "modbus"', ""),
    (_set(1, enum={"1": "home", "x": "roaming"}), "points[1].enum.x", "must be a raw integer", ""),
    (_set(0, valid_range=[0, 70000]), "points[0].valid_range[1]", "a uint16 with scale 1.0", ""),
    (_set(0, valid_range=[31, 0]), "points[0].valid_range", "must be below", ""),
    (_set(1, valid_range=[0, 1]), "points[1].valid_range", "only for read-only numeric", ""),
]


@pytest.mark.parametrize(("mutate", "path", "text", "hint"), AT_CASES,
                         ids=[c[1] + ":" + c[2][:24] for c in AT_CASES])
def test_at_profile_check(write: Writer, at_profile: Doc, mutate: Any, path: str, text: str,
                          hint: str) -> None:
    mutate(at_profile)
    p = only(fails(write, at_profile))
    assert (p.path, p.hint) == (path, hint)
    assert text in p.message


def test_broken_profile_reports_every_problem_at_once(write: Writer, modbus_profile: Doc) -> None:
    modbus_profile["maxgap"] = 1
    del modbus_profile["vendor"]
    pts = modbus_profile["points"]
    pts[0]["table"] = "holdin"
    pts[1]["address"] = 65535
    pts[3]["bit"] = 0
    pts[4]["interval"] = 0.01
    pts[5]["allowed"] = ["auto", "turbo"]
    pts[6]["unti"] = "x"
    pts[7]["name"] = "energy"
    found = fails(write, modbus_profile)
    assert paths(found) == [
        "vendor", "maxgap", "points[0].table", "points[1].address", "points[4].interval",
        "points[5].allowed[1]", "points[6].unti", "points[7].name", "points[3].bit",
    ]


def test_toml_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('vendor = "é"\nmodel = \n', encoding="utf-8")
    p = only(problems(lambda: load_profile(path)))
    assert p.file == str(path) and p.path == ""
    assert "invalid TOML" in p.message and "line 2" in p.message
    # line 1 is 14 bytes (é is two), the error is at column 9 of line 2: 14 + 8
    assert p.message.endswith("(at line 2, column 9), byte offset 22")


def test_non_utf8_names_byte_offset(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_bytes(b'vendor = "caf\xe9"\n')
    p = only(problems(lambda: load_profile(path)))
    assert p.message == "not UTF-8 at byte offset 13"


def test_load_profiles_collects_all_files_and_ignores_subdirectories(
        write: Writer, modbus_profile: Doc, at_profile: Doc) -> None:
    good = write("d/good.toml", modbus_profile)
    write("d/nested/ignored.toml", {"garbage": True})
    assert set(load_profiles(good.parent)) == {"good"}
    at_profile["points"][0]["group"] = "9"
    write("d/b1.toml", at_profile)
    modbus_profile["points"][0]["type"] = "float"
    write("d/b2.toml", modbus_profile)
    found = problems(lambda: load_profiles(good.parent))
    assert [(Path(p.file).name, p.path) for p in found] == [
        ("b1.toml", "points[0].group"), ("b2.toml", "points[0].type")]


def test_missing_profile_directory(tmp_path: Path) -> None:
    p = only(problems(lambda: load_profiles(tmp_path / "nope")))
    assert p.file.endswith("nope") and "does not exist" in p.message


def test_parse_profile_from_dict(modbus_profile: Doc) -> None:
    prof = parse_profile(modbus_profile, name="x", source="mem")
    assert prof.name == "x" and prof.source == "mem" and prof.max_gap == 8
    modbus_profile["points"][0]["type"] = "word"
    p = only(problems(lambda: parse_profile(modbus_profile, name="x", source="mem")))
    assert (p.file, p.path) == ("mem", "points[0].type")


def test_valid_range_is_in_engineering_units(write: Writer, modbus_profile: Doc,
                                             at_profile: Doc) -> None:
    """Compared with raw * scale + offset, i.e. what readings carry; a writable point's plausible
    range is its min/max; float types accept anything finite their width holds."""
    pts = modbus_profile["points"]
    pts[0].update(valid_range=[-40, 85.5], offset=-10)
    pts.append({"name": "flow", "table": "input", "address": 20, "type": "float32",
                "valid_range": [-3.4e38, 1e38]})
    prof = load_profile(write("p/ok.toml", modbus_profile))
    assert prof.point("temp").valid_range == (-40.0, 85.5)
    assert plausible_range(prof.point("temp")) == (-40.0, 85.5)
    assert plausible_range(prof.point("setpoint")) == (0.0, 100.0)  # min/max of a writable point
    assert plausible_range(prof.point("energy")) is None  # undeclared: not checked
    assert plausible_range(prof.point("flow")) == (-3.4e38, 1e38)
    pts[-1]["valid_range"] = [-1e39, 0]
    p = only(fails(write, modbus_profile))
    assert p.path == "points[8].valid_range[0]" and "a float32" in p.message
    at_profile["points"][0]["valid_range"] = [0, 31]
    assert plausible_range(load_profile(write("p/at.toml", at_profile)).point("csq")) == (0, 31)
