"""Pole environment module: daily temperature/humidity cycles, PM and noise with traffic peaks."""

from __future__ import annotations

import random

from .behaviour import Behaviour, bump, daily_wave


def traffic(t: float) -> float:
    """0..~1.2: morning and evening rush hours on a daytime base."""
    day = max(0.0, daily_wave(t, 13.0)) * 0.3
    return day + bump(t, 8.0, 1.2) + 0.9 * bump(t, 17.5, 1.5)


class EnvironmentModel(Behaviour):
    step_s = 30.0
    ranges = {
        "temperature": (-40.0, 60.0),
        "humidity": (0.0, 100.0),
        "pm2_5": (0.0, 500.0),
        "pm10": (0.0, 600.0),
        "noise_db": (30.0, 120.0),
    }

    def __init__(self, rng: random.Random, start_s: float, mean_c: float = 12.0) -> None:
        super().__init__(rng, start_s)
        self.mean_c = mean_c + self.rng.uniform(-1.0, 1.0)  # micro-climate of this pole
        self.values = {"temperature": 0.0, "humidity": 0.0, "pm2_5": 0.0, "pm10": 0.0,
                       "noise_db": 0.0}
        self._step(self.t - self.step_s, self.step_s)

    def _step(self, t: float, dt: float) -> None:
        t1 = t + dt
        v = self.values
        wave = daily_wave(t1, 15.0)  # warmest mid-afternoon
        temp = self.mean_c + 7.0 * wave + self.noise(0.15)
        v["temperature"] = round(temp, 2)
        v["humidity"] = round(min(100.0, max(5.0, 65.0 - 18.0 * wave + self.noise(1.0))), 1)
        tr = traffic(t1)
        pm25 = max(0.0, 8.0 + 30.0 * tr + self.noise(1.5))
        v["pm2_5"] = round(pm25, 1)
        v["pm10"] = round(pm25 * 1.6 + max(0.0, self.noise(2.0)), 1)
        v["noise_db"] = round(42.0 + 28.0 * min(tr, 1.0) + self.noise(1.0), 1)
