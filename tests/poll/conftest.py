"""Fixtures for the poll tests: simulated water meters / lamps on a real pty RTU line."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import pytest

from edge_agent.profiles.model import Profile
from simulators.clock import SimClock
from simulators.devices.catalog import make_device
from simulators.devices.profile_device import ProfileDevice
from simulators.transports.rtu_line import RtuLine

LineFactory = Callable[[Sequence[ProfileDevice]], RtuLine]


def sim_devices(profile: Profile, units: Sequence[int], prefix: str) -> list[ProfileDevice]:
    clock = SimClock(speed=1.0)
    return [make_device(f"{prefix}{u}", u, profile, clock, seed=1) for u in units]


@pytest.fixture
def rtu_line() -> Iterator[LineFactory]:
    """Start RtuLines (9600 8N1) on ptys; every one is stopped at teardown."""
    lines: list[RtuLine] = []

    def start(devices: Sequence[ProfileDevice]) -> RtuLine:
        line = RtuLine(devices, baud=9600)
        line.start()
        lines.append(line)
        return line

    yield start
    for line in lines:
        line.stop()
