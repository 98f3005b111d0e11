"""Water meter: diurnal household flow, totalizer integrates it, battery drains.

Leak detection as real meters do it: if the flow never dropped to zero between 01:00 and 05:00 the
leak bit is set at 05:00 (and cleared after a night that did reach zero). ``leak_m3h`` > 0 models a
leaking pipe behind the meter. Reverse flow and tamper (magnet) are random or forced events.
The totalizer lives in non-volatile memory: a reboot does not reset it.
"""

from __future__ import annotations

import random

from .behaviour import Behaviour, Event, bump, hour_of_day

NIGHT = (1.0, 5.0)


class WaterMeterModel(Behaviour):
    step_s = 30.0
    ranges = {"flow_rate": (-2.0, 5.0), "battery": (0.0, 100.0), "totalizer": (0.0, 1e7)}
    events = ("reverse", "tamper")

    def __init__(self, rng: random.Random, start_s: float, leak_m3h: float = 0.0) -> None:
        super().__init__(rng, start_s)
        self.leak_m3h = leak_m3h
        self.ev_reverse = Event(rate_per_day=0.02, duration_s=120.0)
        self.ev_tamper = Event(rate_per_day=0.005, duration_s=600.0)
        self.night_min = float("inf")
        self.values = {
            "totalizer": round(self.rng.uniform(10.0, 900.0), 3),
            "flow_rate": 0.0,
            "battery": round(self.rng.uniform(60.0, 100.0), 2),
            "tamper": False,
            "leak": False,
            "reverse_flow": False,
            "valve": True,  # open
            "serial_number": f"WM{self.rng.randrange(10**9):09d}",
        }

    def demand(self, t: float) -> float:
        """Probability that a tap is open at ``t``."""
        return min(0.9, 0.02 + 0.5 * bump(t, 7.0, 1.0) + 0.35 * bump(t, 19.5, 1.5)
                   + 0.1 * bump(t, 13.0, 2.0))

    def _step(self, t: float, dt: float) -> None:
        v = self.values
        h = hour_of_day(t + dt)
        draw = self.rng.uniform(0.2, 1.4) if self.rng.random() < self.demand(t) else 0.0
        flow = draw + self.leak_m3h
        self.ev_reverse.maybe_start(t, dt, self.rng)
        self.ev_tamper.maybe_start(t, dt, self.rng)
        if self.ev_reverse.active(t + dt):
            flow = -abs(self.rng.uniform(0.05, 0.3))
        if not v["valve"]:
            flow = 0.0
        flow = round(flow, 4)
        v["flow_rate"] = flow
        v["reverse_flow"] = flow < 0
        v["tamper"] = self.ev_tamper.active(t + dt)
        v["totalizer"] = float(v["totalizer"] or 0.0) + flow * dt / 3600.0
        v["battery"] = max(0.0, float(v["battery"] or 0.0) - 0.5 * dt / 86_400.0 / 30.0)
        if NIGHT[0] <= h < NIGHT[1]:
            self.night_min = min(self.night_min, abs(flow))
        elif h >= NIGHT[1] and self.night_min != float("inf"):
            v["leak"] = self.night_min > 0.0
            self.night_min = float("inf")

    def reboot(self) -> None:
        self.night_min = float("inf")
