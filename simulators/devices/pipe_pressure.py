"""Pipe pressure transmitter: demand-driven pressure with noise, plus water-hammer transients.

A transient is a damped oscillation (a pump trip or a valve slamming shut); pressure is evaluated
at the exact read time so the oscillation is visible at fast poll rates.
"""

from __future__ import annotations

import math
import random

from .behaviour import Behaviour, Event, bump

OK, SENSOR_FAULT, OVER_RANGE, UNDER_RANGE = 0, 1, 2, 3  # the profile's status enum
RANGE_BAR = (0.5, 16.0)
HAMMER_AMPL_BAR = 3.0
HAMMER_PERIOD_S = 0.8
HAMMER_DECAY_S = 3.0


class PipePressureModel(Behaviour):
    step_s = 1.0
    ranges = {"pressure": (0.0, 16.0), "temperature": (0.0, 40.0)}
    events = ("hammer",)

    def __init__(self, rng: random.Random, start_s: float, nominal_bar: float = 4.5) -> None:
        super().__init__(rng, start_s)
        self.nominal = nominal_bar
        self.ev_hammer = Event(rate_per_day=2.0, duration_s=5 * HAMMER_DECAY_S)
        self.hammer_at = -1e18
        self.base = nominal_bar
        self.values = {"pressure": nominal_bar, "temperature": 11.0, "status": OK}

    def pressure_at(self, t: float) -> float:
        p = self.base
        age = t - self.hammer_at
        if 0.0 <= age < 5 * HAMMER_DECAY_S:
            p += HAMMER_AMPL_BAR * math.exp(-age / HAMMER_DECAY_S) * math.cos(
                2 * math.pi * age / HAMMER_PERIOD_S)
        return max(0.0, p)

    def advance(self, now_s: float) -> None:
        super().advance(now_s)
        p = self.pressure_at(now_s)
        self.values["pressure"] = round(p, 3)
        lo, hi = RANGE_BAR
        self.values["status"] = OVER_RANGE if p > hi else UNDER_RANGE if p < lo else OK

    def _step(self, t: float, dt: float) -> None:
        if self.ev_hammer.maybe_start(t, dt, self.rng):
            self.hammer_at = t + dt
        demand = bump(t, 7.5, 1.5) + bump(t, 19.5, 2.0)
        self.base = self.nominal - 0.6 * demand + self.noise(0.02)
        self.values["temperature"] = round(11.0 + 0.5 * bump(t, 16.0, 4.0) + self.noise(0.02), 2)

    def trigger(self, event: str, duration_s: float | None = None) -> None:
        super().trigger(event, duration_s)
        self.hammer_at = self.t
