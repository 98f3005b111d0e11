"""Manhole cover: tilt/open events, water level that rises in rain, sewer gas."""

from __future__ import annotations

import random

from .behaviour import Behaviour, Event


class ManholeModel(Behaviour):
    step_s = 30.0
    ranges = {
        "tilt_angle": (0.0, 90.0),
        "water_level": (0.0, 300.0),
        "ch4": (0.0, 100.0),
        "h2s": (0.0, 100.0),
        "battery": (0.0, 100.0),
    }
    events = ("open", "gas")

    def __init__(self, rng: random.Random, start_s: float, rain_mm_h: float = 0.0) -> None:
        super().__init__(rng, start_s)
        self.rain_mm_h = rain_mm_h  # set by the scenario ("rain") or at run time
        self.ev_open = Event(rate_per_day=0.01, duration_s=1800.0)
        self.ev_gas = Event(rate_per_day=0.05, duration_s=600.0)
        self.base_level = self.rng.uniform(5.0, 25.0)
        self.values = {
            "tilt_angle": 0.5,
            "cover_open": False,
            "water_level": round(self.base_level, 1),
            "ch4": 0.5,
            "h2s": 0.2,
            "battery": round(self.rng.uniform(70.0, 100.0), 1),
        }

    def _step(self, t: float, dt: float) -> None:
        v = self.values
        self.ev_open.maybe_start(t, dt, self.rng)
        self.ev_gas.maybe_start(t, dt, self.rng)
        opened = self.ev_open.active(t + dt)
        v["cover_open"] = opened
        v["tilt_angle"] = round((75.0 if opened else 0.5) + abs(self.noise(0.1)), 1)
        level = float(v["water_level"] or 0.0)
        # inflow ~ 2 cm/h per mm/h of rain, drain proportional to the height above the base level
        level += (2.0 * self.rain_mm_h - 0.4 * (level - self.base_level)) * dt / 3600.0
        v["water_level"] = round(min(300.0, max(0.0, level)), 2)
        gas = 8.0 if self.ev_gas.active(t + dt) else 0.0
        v["ch4"] = round(max(0.0, 0.5 + gas + self.noise(0.1)), 2)
        v["h2s"] = round(max(0.0, 0.2 + gas * 1.5 + self.noise(0.05)), 2)
        v["battery"] = max(0.0, float(v["battery"] or 0.0) - dt / 86_400.0 / 60.0)
