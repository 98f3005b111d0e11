"""Fixtures of the simulator tests: shipped profiles, a clock that moves only when told."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.profiles.load import load_profiles
from edge_agent.profiles.model import Profile
from simulators.clock import SimClock
from simulators.devices.catalog import make_device
from simulators.devices.profile_device import ProfileDevice

PROFILES_DIR = Path(__file__).resolve().parents[2] / "device_profiles"


@pytest.fixture(scope="session")
def profiles() -> dict[str, Profile]:
    return load_profiles(PROFILES_DIR)


@pytest.fixture
def clock() -> SimClock:
    """Stopped at 19:00 of day 0; tests move it with ``advance``."""
    return SimClock(speed=0.0, start_s=19 * 3600.0)


class DeviceMaker:
    def __init__(self, profiles: dict[str, Profile], clock: SimClock) -> None:
        self.profiles = profiles
        self.clock = clock

    def __call__(self, profile: str, name: str = "dev-01", unit_id: int = 1, seed: int = 1,
                 **params: object) -> ProfileDevice:
        return make_device(name, unit_id, self.profiles[profile], self.clock, seed=seed,
                           params=dict(params))


@pytest.fixture
def make(profiles: dict[str, Profile], clock: SimClock) -> DeviceMaker:
    return DeviceMaker(profiles, clock)
