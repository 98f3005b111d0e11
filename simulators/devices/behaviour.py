"""The base of every behaviour model: engineering values per point name, moved over simulated time.

A model advances on a fixed grid of ``step_s`` simulated seconds, whatever the read pattern, so the
same seed gives the same values at the same simulated time (determinism). Values are plain
engineering values keyed by the profile's point names (enums as their raw integer); the device
layer (``ProfileDevice``) encodes them into registers with the profile codec.
"""

from __future__ import annotations

import abc
import math
import random
from dataclasses import dataclass

from edge_agent.errors import BoundsError
from edge_agent.readings import Value

from ..clock import DAY_S


def hour_of_day(t: float) -> float:
    return (t % DAY_S) / 3600.0


def daily_wave(t: float, peak_h: float) -> float:
    """Cosine over the day: +1 at ``peak_h``, -1 twelve hours later."""
    return math.cos(2 * math.pi * (hour_of_day(t) - peak_h) / 24.0)


def bump(t: float, centre_h: float, width_h: float) -> float:
    """A Gaussian bump of height 1 centred at ``centre_h`` (wraps around midnight)."""
    d = (hour_of_day(t) - centre_h + 12.0) % 24.0 - 12.0
    return math.exp(-0.5 * (d / width_h) ** 2)


@dataclass(slots=True)
class Event:
    """A timed condition (door open, tamper ...) scheduled by a Poisson process or forced."""

    rate_per_day: float
    duration_s: float
    until: float = -1.0

    def active(self, t: float) -> bool:
        return t < self.until

    def maybe_start(self, t: float, dt: float, rng: random.Random) -> bool:
        """Start with probability rate*dt; returns True on the step it starts."""
        if self.active(t) or self.rate_per_day <= 0:
            return False
        if rng.random() < self.rate_per_day * dt / DAY_S:
            self.until = t + self.duration_s * rng.uniform(0.5, 1.5)
            return True
        return False


class Behaviour(abc.ABC):
    """Subclasses set ``values`` in ``__init__`` and implement ``_step(t, dt)``."""

    step_s: float = 10.0
    ranges: dict[str, tuple[float, float]] = {}  # physical range per numeric point
    events: tuple[str, ...] = ()  # names accepted by ``trigger``

    def __init__(self, rng: random.Random, start_s: float) -> None:
        self.rng = rng
        self.t = math.floor(start_s / self.step_s) * self.step_s
        self.values: dict[str, Value] = {}

    def advance(self, now_s: float) -> None:
        """Run every whole step up to ``now_s``; the last step's values are current."""
        while self.t + self.step_s <= now_s:
            self._step(self.t, self.step_s)
            self.t += self.step_s

    @abc.abstractmethod
    def _step(self, t: float, dt: float) -> None:
        """Each kind of device / transport provides this."""

    def write(self, point: str, value: Value) -> None:
        """A write from the bus, already decoded and bounds-checked. Default: store it."""
        if point not in self.values:
            raise BoundsError(f"point {point!r} is not writable in {type(self).__name__}")
        self.values[point] = value

    def trigger(self, event: str, duration_s: float | None = None) -> None:
        """Force an event now (tests, ``edge-sim event``)."""
        ev = getattr(self, f"ev_{event}", None)
        if not isinstance(ev, Event):
            raise KeyError(f"{type(self).__name__} has no event {event!r}; known: {self.events}")
        ev.until = self.t + (ev.duration_s if duration_s is None else duration_s)

    def reboot(self) -> None:  # noqa: B027 - a deliberate no-op default, not abstract
        """Power cycle: volatile state back to defaults (subclasses say which)."""

    def out_of_range(self, point: str) -> float | None:
        """A value beyond the physical range, for the OUT_OF_RANGE fault (None: no range)."""
        rng = self.ranges.get(point)
        if rng is None:
            return None
        lo, hi = rng
        return hi + (hi - lo)

    def num(self, point: str) -> float:
        """The current value of a numeric point as a float (0.0 if unset)."""
        v = self.values.get(point)
        return float(v) if isinstance(v, int | float) else 0.0

    def noise(self, sigma: float) -> float:
        return self.rng.gauss(0.0, sigma)
