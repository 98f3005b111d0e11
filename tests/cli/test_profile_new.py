"""`edge-agent profile new` drafts a profile from a vendor's register table (CSV) or from what a
unit on a simulated RS-485 line answers, and validates it; `profile list` is the README's table."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.cli.profile_draft import from_csv, point_name
from edge_agent.profiles.load import load_profile
from simulators.clock import SimClock
from simulators.devices.catalog import make_device
from simulators.transports.rtu_line import RtuLine

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "edge_agent.cli.main"]

GOOD = """Name;Table;Address;Type;Scale;Unit;Access;Min;Max;Bit;Length
Temperature;;30001;S16;0.1;°C;R;-40;80;;
Humidity;;30002;U16;0.1;%RH;R;0;100;;
Energy counter;input;3;U32;0,01;kWh;R;;;;
Door open;;30006;bit;;;R;;;0;
Tamper;;30006;bit;;;R;;;1;
Fan speed;;40001;WORD;;%;R/W;0;100;;
Heater relay;coil;0;;;;RW;;;;
Serial;;30010;ASCII;;;R;;;;4
"""


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60,
                          check=False, cwd=cwd)


def test_a_vendor_table_becomes_a_valid_profile(tmp_path: Path) -> None:
    (tmp_path / "ps2.csv").write_text(GOOD, encoding="utf-8")
    r = cli("profile", "new", "acme_ps2", "--csv", "ps2.csv", "--vendor", "Acme", "--class",
            "environment", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "it validates" in r.stdout
    prof = load_profile(tmp_path / "acme_ps2.toml")
    pts = {p.name: p for p in prof.modbus_points}
    assert set(pts) == {"temperature", "humidity", "energy_counter", "door_open", "tamper",
                        "fan_speed", "heater_relay", "serial"}
    t = pts["temperature"]
    assert (t.table, t.address, t.type, t.scale, t.unit) == ("input", 0, "int16", 0.1, "°C")
    assert t.valid_range == (-40, 80)
    e = pts["energy_counter"]
    assert (e.address, e.type, e.scale) == (3, "uint32", 0.01)  # decimal comma understood
    assert (pts["tamper"].address, pts["tamper"].bit) == (5, 1)
    fan = pts["fan_speed"]
    assert (fan.table, fan.address, fan.writable) == ("holding", 0, True)
    assert fan.bounds is not None and (fan.bounds.min, fan.bounds.max) == (0, 100)
    assert pts["heater_relay"].type == "bool" and pts["serial"].length == 4
    assert prof.vendor == "Acme" and prof.component_class == "environment"
    # never over an existing file without --force
    again = cli("profile", "new", "acme_ps2", "--csv", "ps2.csv", cwd=tmp_path)
    assert again.returncode == 2 and "already exists" in again.stderr


def test_what_is_missing_is_named_by_csv_line(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("name,table,address,type,access\n"
                                    "level,input,0,uint16,r\n"
                                    "flag,input,1,bit,r\n"
                                    "setpoint,holding,0,int16,rw\n", encoding="utf-8")
    r = cli("profile", "new", "t", "--csv", "t.csv", cwd=tmp_path)
    assert r.returncode == 1
    assert "t.csv: line 3 (points[1].bit): required key missing (fill the 'bit' column" \
        in r.stdout, r.stdout
    assert "t.csv: line 4 (points[2]): writable point has no bounds" in r.stdout
    assert "fill its min and max columns" in r.stdout
    assert r.stderr.strip().splitlines() == [
        "edge-agent profile new: wrote the draft t.toml, but it does not validate yet "
        "(2 problem(s) above); add what they name, then: edge-agent check-config t.toml"]


def test_rows_that_cannot_be_drafted_write_nothing(tmp_path: Path) -> None:
    (tmp_path / "b.csv").write_text("name,address,type\n"
                                    "a,40001,uint17\n"
                                    "b,17,uint16\n"
                                    "c,abc,uint16\n", encoding="utf-8")
    r = cli("profile", "new", "b", "--csv", "b.csv", cwd=tmp_path)
    assert r.returncode == 1 and not (tmp_path / "b.toml").exists()
    assert "line 2: type 'uint17' is not one of" in r.stdout
    assert "line 3: no table" in r.stdout and "line 4: address 'abc'" in r.stdout
    (tmp_path / "h.csv").write_text("label,register\nx,1\n", encoding="utf-8")
    r = cli("profile", "new", "h", "--csv", "h.csv", cwd=tmp_path)
    assert r.returncode == 1 and "the header has no name, address, type" in r.stdout


def test_drafting_rules() -> None:
    assert point_name("Flow Rate (m³/h)") == "flow_rate_m_h"
    assert point_name("2nd sensor") == "p_2nd_sensor"
    d = from_csv("name,address,type\nx,400010,uint16\ny,10001,bool\n", one_based=True)
    assert [(p["table"], p["address"], p["type"]) for p in d.points] == [
        ("holding", 9, "uint16"), ("discrete", 0, "bool")]
    d = from_csv("name,table,address,type\nx,hr,10,u16\nx,hr,11,u16\n", one_based=True)
    assert [(p["name"], p["address"]) for p in d.points] == [("x", 9), ("x_2", 10)]


def test_profile_list_is_the_readme_table() -> None:
    r = subprocess.run([*CLI, "profile", "list", "--markdown"], capture_output=True, text=True,
                       timeout=60, check=True)
    assert r.stdout.strip() in (ROOT / "README.md").read_text(), \
        "README's table of shipped profiles is stale: edge-agent profile list --markdown"


@pytest.fixture
def line() -> Iterator[str]:
    clock = SimClock(speed=0.0, start_s=12 * 3600.0)
    prof = load_profile(ROOT / "device_profiles" / "water_meter.toml")
    rtu = RtuLine([make_device("meter", 4, prof, clock)], baud=19200)
    path = rtu.start()
    try:
        yield path
    finally:
        rtu.stop()


@pytest.mark.timeout(120)
def test_a_draft_from_a_scan(line: str, tmp_path: Path) -> None:
    r = subprocess.run([*CLI, "profile", "new", "meter", "--scan", line, "4", "--baud", "19200",
                        "--span", "input:0-15", "--span", "coil:0-3"], capture_output=True,
                       text=True, timeout=100, check=False, cwd=tmp_path,
                       env={"PATH": "/usr/bin:/bin", "EDGE_AGENT_SOCKET": str(tmp_path / "x")})
    assert r.returncode == 0, r.stdout + r.stderr
    prof = load_profile(tmp_path / "meter.toml")
    names = {p.name for p in prof.points}
    assert {"input_0", "input_1", "input_4", "coil_0"} <= names  # totalizer, battery, valve
    text = (tmp_path / "meter.toml").read_text()
    assert "# read 63 (0x003F)" in text or "# read " in text


TEMP = "name,table,address,type,scale,unit,access\ntemp,holding,40001,int16,0.1,°C,r\n"


@pytest.mark.parametrize(("encoding", "bom"), [("utf-8", b""), ("utf-8", b"\xef\xbb\xbf"),
                                               ("utf-16-le", b"\xff\xfe"),
                                               ("utf-16-be", b"\xfe\xff"),
                                               ("utf-32-le", b"\xff\xfe\x00\x00")])
def test_a_table_in_any_unicode_a_spreadsheet_saves(tmp_path: Path, encoding: str,
                                                     bom: bytes) -> None:
    (tmp_path / "t.csv").write_bytes(bom + TEMP.replace("\n", "\r\n").encode(encoding))
    r = cli("profile", "new", "t", "--csv", "t.csv", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert load_profile(tmp_path / "t.toml").points[0].unit == "°C"


def test_a_table_in_another_encoding_is_named_not_guessed(tmp_path: Path) -> None:
    (tmp_path / "l.csv").write_bytes(TEMP.encode("cp1252"))
    r = cli("profile", "new", "l", "--csv", "l.csv", cwd=tmp_path)
    (line,) = r.stderr.strip().splitlines()
    assert r.returncode == 2 and "Traceback" not in r.stderr and not (tmp_path / "l.toml").exists()
    at = TEMP.encode("cp1252").index(b"\xb0")
    assert f"l.csv is not UTF-8: byte {at} (line 2, 0xb0)" in line, line
    assert "save it as UTF-8" in line and "--encoding cp1252" in line
    r = cli("profile", "new", "l", "--csv", "l.csv", "--encoding", "cp1252", cwd=tmp_path)
    assert r.returncode == 0 and load_profile(tmp_path / "l.toml").points[0].unit == "°C"
    # UTF-16 without its byte-order mark: said, with the --encoding that reads it
    (tmp_path / "w.csv").write_bytes(TEMP.encode("utf-16-le"))
    r = cli("profile", "new", "w", "--csv", "w.csv", cwd=tmp_path)
    assert r.returncode == 2 and "looks like UTF-16 without a byte-order mark" in r.stderr
    assert "--encoding utf-16-le" in r.stderr
    # a BOM that lies, an unknown encoding, a binary file: one line each, nothing written
    for name, data, args, says in (
            ("b.csv", b"\xff\xfe\x00garbag", [], "does not read as utf-16 at"),
            ("x.csv", TEMP.encode(), ["--encoding", "klingon"], "not an encoding Python knows"),
            ("z.csv", b"PK\x03\x04\x00\x00\x08\x00binary", [], "a NUL character at")):
        (tmp_path / name).write_bytes(data)
        r = cli("profile", "new", "q", "--csv", name, *args, cwd=tmp_path)
        (line,) = r.stderr.strip().splitlines()
        assert r.returncode == 2 and says in line and not (tmp_path / "q.toml").exists(), line


def test_json_carries_every_problem_and_a_missing_directory_is_named(tmp_path: Path) -> None:
    """--json: the problems of the CSV (or of the draft) are in the one error object, by line,
    nothing on stderr; --out into a directory that does not exist says so."""
    import json

    (tmp_path / "b.csv").write_text("name,address,type\n"
                                    "a,40001,uint17\n"
                                    "c,abc,uint16\n", encoding="utf-8")
    r = cli("profile", "new", "b", "--csv", "b.csv", "--json", cwd=tmp_path)
    assert r.returncode == 1 and not r.stderr, r.stderr
    err = json.loads(r.stdout)
    assert err["error"] == "bad_csv" and err["file"] == "b.csv", err
    assert [p["line"] for p in err["problems"]] == [2, 3], err
    assert "uint17" in err["problems"][0]["message"], err
    (tmp_path / "t.csv").write_text("name,table,address,type,access\n"
                                    "level,input,0,uint16,r\n"
                                    "setpoint,holding,0,int16,rw\n", encoding="utf-8")
    r = cli("profile", "new", "t", "--csv", "t.csv", "--json", cwd=tmp_path)
    assert r.returncode == 1 and not r.stderr, r.stderr
    err = json.loads(r.stdout)
    assert err["error"] == "invalid_draft" and err["draft"] == "t.toml", err
    [prob] = err["problems"]
    assert prob["line"] == 3 and "no bounds" in prob["message"], prob
    assert prob["hint"] == "fill its min and max columns", prob
    for out in ("/nonexistent-dir/sub", "/nonexistent-dir/p5.toml"):
        r = cli("profile", "new", "p5", "--csv", "t.csv", "--out", out, cwd=tmp_path)
        assert r.returncode == 2, r.stderr
        assert "no such directory /nonexistent-dir" in r.stderr, r.stderr
        assert "file name is its name" not in r.stderr, r.stderr


def test_a_bad_row_reports_every_problem_not_only_the_first() -> None:
    draft = from_csv("name,table,address,type,scale,access\n"
                     "x,holding,abc,uint17,0,maybe\n"
                     "ok,holding,1,uint16,,r\n")
    assert draft.problems == [
        "line 2: address 'abc' is not a number",
        "line 2: type 'uint17' is not one of " + draft.problems[1].split(" one of ")[1],
        "line 2: scale '0' is not a non-zero number",
        "line 2: access 'maybe' is not r or rw"], draft.problems
    assert [p["name"] for p in draft.points] == ["ok"]
