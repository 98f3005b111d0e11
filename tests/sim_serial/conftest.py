"""Fixtures for the serial simulators: real profile devices behind a real pty line/modem."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import serial

from edge_agent.profiles.load import load_profile
from simulators.clock import SimClock
from simulators.devices.catalog import make_device
from simulators.devices.profile_device import ProfileDevice
from simulators.transports.rtu_line import RtuLine

PROFILES = Path(__file__).resolve().parents[2] / "device_profiles"
LAMP_UNIT, ENV_UNIT = 1, 2


@pytest.fixture
def clock() -> SimClock:
    return SimClock(speed=0.0, start_s=12 * 3600.0)  # frozen noon: values only move when told


@pytest.fixture
def lamp(clock: SimClock) -> ProfileDevice:
    return make_device("lamp-1", LAMP_UNIT, load_profile(PROFILES / "street_lamp.toml"), clock)


@pytest.fixture
def env(clock: SimClock) -> ProfileDevice:
    profile = load_profile(PROFILES / "pole_environment.toml")
    return make_device("env-1", ENV_UNIT, profile, clock)


@pytest.fixture
def line(lamp: ProfileDevice, env: ProfileDevice) -> Iterator[RtuLine]:
    rtu = RtuLine([lamp, env], baud=9600)
    rtu.start()
    yield rtu
    rtu.stop()


@pytest.fixture
def port(line: RtuLine) -> Iterator[serial.Serial]:
    s = serial.Serial(line.path, 9600, timeout=0.5)
    yield s
    s.close()


def transact(port: serial.Serial, frame: bytes, expect: int) -> tuple[bytes, float]:
    """Write ``frame``, read up to ``expect`` bytes; (answer, seconds from write to last byte)."""
    t0 = time.perf_counter()
    port.write(frame)
    data = port.read(expect)
    return data, time.perf_counter() - t0
