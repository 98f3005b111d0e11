"""`edge-agent scan` finds the units on a simulated RS-485 line and suggests fitting profiles."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.profiles.load import load_profile
from simulators.clock import SimClock
from simulators.devices.catalog import make_device
from simulators.transports.rtu_line import RtuLine

PROFILES = Path(__file__).resolve().parents[2] / "device_profiles"


@pytest.fixture
def line() -> Iterator[tuple[RtuLine, str]]:
    clock = SimClock(speed=0.0, start_s=12 * 3600.0)
    devices = [
        make_device("meter-a", 3, load_profile(PROFILES / "water_meter.toml"), clock),
        make_device("manhole-b", 7, load_profile(PROFILES / "manhole_cover.toml"), clock),
    ]
    rtu = RtuLine(devices, baud=19200)
    path = rtu.start()
    try:
        yield rtu, path
    finally:
        rtu.stop()


@pytest.mark.timeout(120)
def test_scan_finds_units_and_profiles(line: tuple[RtuLine, str]) -> None:
    rtu, path = line
    proc = subprocess.run(
        [sys.executable, "-m", "edge_agent.cli.main", "scan", path, "--baud", "19200",
         "--units", "1-10", "--timeout", "0.05", "--json"],
        capture_output=True, text=True, timeout=100, check=False)
    assert proc.returncode == 0, proc.stderr
    found = {f["unit"]: f for f in json.loads(proc.stdout)}
    assert set(found) == {3, 7}
    assert "water_meter" in found[3]["profiles"]
    assert "manhole_cover" in found[7]["profiles"]
    assert "water_meter" not in found[7]["profiles"]
    assert rtu.violations == []  # the scanner keeps the silent interval like the poller


@pytest.mark.timeout(60)
def test_scan_reports_nothing_found(line: tuple[RtuLine, str]) -> None:
    _, path = line
    proc = subprocess.run(
        [sys.executable, "-m", "edge_agent.cli.main", "scan", path, "--baud", "19200",
         "--units", "11-13", "--timeout", "0.05"],
        capture_output=True, text=True, timeout=50, check=False)
    assert proc.returncode == 1 and "no device answered" in proc.stdout
