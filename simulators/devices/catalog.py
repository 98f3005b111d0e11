"""Which behaviour model animates which profile, and the one way to build a seeded device."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from edge_agent.profiles.model import Profile

from ..clock import SimClock
from .behaviour import Behaviour
from .environment import EnvironmentModel
from .lamp import LampModel
from .manhole import ManholeModel
from .pipe_pressure import PipePressureModel
from .profile_device import ProfileDevice
from .water_meter import WaterMeterModel

ModelFactory = Callable[..., Behaviour]

MODELS: dict[str, ModelFactory] = {
    "street_light": LampModel,
    "environment": EnvironmentModel,
    "water_meter": WaterMeterModel,
    "manhole_cover": ManholeModel,
    "pipe_pressure": PipePressureModel,
}


def device_rng(seed: int, name: str) -> random.Random:
    """The device's own random stream: the same scenario seed and name give the same values."""
    return random.Random(f"{seed}:{name}")


def make_device(
    name: str,
    unit_id: int,
    profile: Profile,
    clock: SimClock,
    *,
    seed: int = 0,
    params: dict[str, Any] | None = None,
) -> ProfileDevice:
    """A ProfileDevice with the model of the profile's component class (``params`` go to it)."""
    factory = MODELS.get(profile.component_class)
    if factory is None:
        raise KeyError(
            f"profile {profile.name!r}: no simulator model for class {profile.component_class!r}"
            f" (have: {sorted(MODELS)})"
        )
    model = factory(device_rng(seed, name), clock.now(), **(params or {}))
    return ProfileDevice(name, unit_id, profile, model, clock)
