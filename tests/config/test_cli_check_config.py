"""`edge-agent check-config`: summary and exit 0 for a valid config, every problem and exit 1 for
a broken one; also for a single profile and a profile directory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.cli.main import main
from edge_agent.config.checks import device_plan
from edge_agent.config.load import load_config
from edge_agent.profiles.load import load_profiles
from tests.config.conftest import EXAMPLE, PROFILES, Doc, Writer, problems


def test_example_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    cfg = load_config(EXAMPLE)
    assert out.startswith(f"config ok: gateway {cfg.gateway_id}")
    for name in cfg.buses:
        assert f"bus {name} " in out
    for d in cfg.devices:
        profile = cfg.profiles[d.profile]
        line = next(x for x in out.splitlines() if x.strip().startswith(d.name + " "))
        assert d.profile in line and f"{len(profile.points)} pts" in line
        if profile.modbus_points:
            reads = [f"{r.table.value} {r.address}+{r.count}" for r in device_plan(d, profile)]
            assert line.endswith("pts  " + ", ".join(reads))
    n_points = sum(len(cfg.profiles[d.profile].points) for d in cfg.devices)
    assert f"{len(cfg.buses)} buses, {len(cfg.devices)} devices, {n_points} points" in out
    assert len(out.splitlines()) <= 25  # one screen
    assert max(len(x) for x in out.splitlines()[2:]) <= 100  # line 1 holds the full path


def test_example_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", "--json", str(EXAMPLE)]) == 0
    doc = json.loads(capsys.readouterr().out)
    cfg = load_config(EXAMPLE)
    assert doc["ok"] is True and doc["kind"] == "config"
    assert doc["totals"]["devices"] == len(cfg.devices)
    by_name = {d["name"]: d for b in doc["buses"] for d in b["devices"]}
    lamp = next(d for d in cfg.devices if d.profile == "street_lamp")
    want = [(r.table.value, r.address, r.count, [p.name for p in r.points])
            for r in device_plan(lamp, cfg.profiles["street_lamp"])]
    got = [(r["table"], r["address"], r["count"], r["points"])
           for r in by_name[lamp.name]["requests"]]
    assert got == want
    rtu = [b for b in doc["buses"] if b["kind"] == "rtu"]
    assert rtu and all(0 < b["line_load"] < 1 for b in rtu)
    assert all(b["line_load"] is None for b in doc["buses"] if b["kind"] != "rtu")


def _broken(write: Writer, config: Doc) -> Path:
    config["devices"][0]["profile"] = "street_lamps"
    config["devices"][1]["unit_id"] = 1
    config["buses"][0]["baud"] = 9601
    config["batch"] = {"max_readings": 0}
    return write("etc/agent.toml", config)


def test_broken_config_prints_every_problem(write: Writer, config: Doc,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    config["buses"][0]["stopbits"] = 3
    path = _broken(write, config)
    expected = [str(p) for p in problems(lambda: load_config(path))]
    assert main(["check-config", str(path)]) == 1
    cap = capsys.readouterr()
    assert cap.out.splitlines() == expected
    # baud, stopbits, max_readings, profile; the unit-id clash on the broken bus stays quiet
    assert [line.split(": ")[1] for line in expected] == [
        "buses[0].baud", "buses[0].stopbits", "batch.max_readings", "devices[0].profile"]
    assert f"{path}: buses[0].baud: 9601 is not a standard rate" in cap.out
    assert "(did you mean 9600?)" in cap.out
    assert cap.err.strip() == "4 problem(s) found"


def test_broken_config_json(write: Writer, config: Doc,
                            capsys: pytest.CaptureFixture[str]) -> None:
    _broken(write, config)
    config["buses"][0]["baud"] = 9600  # keep line1 valid so the unit-id check runs
    path = write("etc/agent.toml", config)
    assert main(["check-config", "--json", str(path)]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is False
    assert [(p["path"], p["hint"]) for p in doc["problems"]] == [
        ("batch.max_readings", ""),
        ("devices[0].profile", "did you mean 'street_lamp'?"),
        ("devices[1].unit_id", ""),
    ]


def test_single_profile_and_profile_directory(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(PROFILES / "manhole_cover.toml")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("profile ok: manhole_cover")
    assert "input 0+4: tilt_angle, cover_open, water_level, ch4" in out
    assert main(["check-config", "--json", str(PROFILES)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {p["name"] for p in doc["profiles"]} == set(load_profiles(PROFILES))


def test_broken_profile_file(write: Writer, modbus_profile: Doc,
                             capsys: pytest.CaptureFixture[str]) -> None:
    modbus_profile["points"][1]["order"] = "DCAB"
    path = write("p/x.toml", modbus_profile)
    assert main(["check-config", str(path)]) == 1
    assert capsys.readouterr().out == (f"{path}: points[1].order: 'DCAB' is not one of 'ABCD', "
                                       "'DCBA', 'BADC', 'CDAB' (did you mean 'DCBA'?)\n")


@pytest.mark.timeout(30)
def test_installed_entry_point_runs_as_a_process() -> None:
    exe = Path(sys.executable).with_name("edge-agent")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "edge_agent.cli.main"]
    ok = subprocess.run([*cmd, "check-config", str(EXAMPLE)], capture_output=True, text=True,
                        timeout=20, check=False)
    assert ok.returncode == 0, ok.stderr
    assert "config ok" in ok.stdout
    bad = subprocess.run([*cmd, "check-config", str(EXAMPLE.parent / "missing.toml")],
                         capture_output=True, text=True, timeout=20, check=False)
    assert bad.returncode == 1 and "cannot read file" in bad.stdout
