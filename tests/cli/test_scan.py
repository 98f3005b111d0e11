"""`edge-agent scan` finds the units on a simulated RS-485 line and ranks the profiles by what the
registers hold: each kind of device gets its own profile first (a water meter no longer "fits"
all five); --sweep works on a pty (a parity the port refuses is a note, not a traceback); Ctrl-C
prints the units found so far; a missing port is named."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.profiles.load import load_profile
from simulators.clock import SimClock
from simulators.devices.catalog import make_device
from simulators.transports.rtu_line import RtuLine

PROFILES = Path(__file__).resolve().parents[2] / "device_profiles"
CLI = [sys.executable, "-m", "edge_agent.cli.main", "scan"]
UNITS = {3: "water_meter", 7: "manhole_cover", 9: "pipe_pressure", 12: "street_lamp",
         15: "pole_environment"}


@pytest.fixture
def line() -> Iterator[tuple[RtuLine, str]]:
    clock = SimClock(speed=0.0, start_s=21 * 3600.0)  # evening: the lamp is on
    devices = [make_device(f"{name}-{unit}", unit, load_profile(PROFILES / f"{name}.toml"),
                           clock) for unit, name in UNITS.items()]
    rtu = RtuLine(devices, baud=19200)
    path = rtu.start()
    try:
        yield rtu, path
    finally:
        rtu.stop()


@pytest.mark.timeout(120)
def test_scan_finds_units_and_ranks_profiles(line: tuple[RtuLine, str]) -> None:
    rtu, path = line
    proc = subprocess.run([*CLI, path, "--baud", "19200", "--units", "1-16", "--json"],
                          capture_output=True, text=True, timeout=100, check=False)
    assert proc.returncode == 0, proc.stderr
    found = {f["unit"]: f for f in json.loads(proc.stdout)}
    assert set(found) == set(UNITS)
    for unit, name in UNITS.items():
        best = found[unit]["ranking"][0]
        assert best["profile"] == name and best["fits"], found[unit]["ranking"]
        assert found[unit]["profiles"][0] == name
    water = found[3]["ranking"]
    assert water[0]["identity"]["serial_number"].startswith("WM")
    assert not any(r["fits"] for r in found[7]["ranking"][1:])  # the manhole refuses the rest
    assert water[0]["score"] > max(r["score"] for r in water[1:]) + 0.2
    assert rtu.violations == []  # the scanner keeps the silent interval like the poller
    human = subprocess.run([*CLI, path, "--baud", "19200", "--units", "3-3"],
                           capture_output=True, text=True, timeout=60, check=False).stdout
    assert "water_meter" in human and "serial_number WM" in human, human


@pytest.mark.timeout(120)
def test_sweep_on_a_pty_and_nothing_found(line: tuple[RtuLine, str]) -> None:
    _, path = line
    proc = subprocess.run([*CLI, path, "--sweep", "--units", "3-3", "--json"],
                          capture_output=True, text=True, timeout=100, check=False)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    found = json.loads(proc.stdout)
    assert {f["unit"] for f in found} == {3} and len({f["baud"] for f in found}) == 7
    human = subprocess.run([*CLI, path, "--sweep", "--units", "3-3"], capture_output=True,
                           text=True, timeout=100, check=False).stdout
    assert "pseudo-terminal" in human
    assert "(22," not in human, human  # a refused parity is said in words (Invalid argument)
    proc = subprocess.run([*CLI, path, "--baud", "19200", "--units", "1-2"],
                          capture_output=True, text=True, timeout=50, check=False)
    assert proc.returncode == 1 and "no device answered" in proc.stdout
    proc = subprocess.run([*CLI, "/dev/ttyUSB-nosuch"], capture_output=True, text=True,
                          timeout=50, check=False)
    assert proc.returncode == 2 and proc.stderr.startswith(
        "edge-agent scan: no serial port /dev/ttyUSB-nosuch"), proc.stderr


@pytest.mark.timeout(120)
def test_ctrl_c_keeps_what_was_found(line: tuple[RtuLine, str]) -> None:
    _, path = line
    proc = subprocess.Popen([*CLI, path, "--baud", "19200", "--timeout", "0.2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(6)  # units 3 (and maybe 7) found; 247 units take far longer
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert "water_meter" in out and "interrupted after" in out, out
