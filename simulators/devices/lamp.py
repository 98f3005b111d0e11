"""Street lamp controller: power follows lamp_on and dimming, energy integrates power.

Auto mode (light_mode 0) switches on at dusk (18:00, 100 %), dims to 50 % at 00:00 and switches
off at dawn (06:00); it acts on those edges only, so a write (lamp_on, dimming) holds until the next
edge. Manual mode (1) never switches by itself. Power is linear in dimming (the driver's standby
draw is below the meter's resolution): dimming 50 % halves the power.
"""

from __future__ import annotations

import random

from edge_agent.readings import Value

from .behaviour import Behaviour, Event, daily_wave, hour_of_day

AUTO, MANUAL, SCHEDULE = 0, 1, 2
RATED_W = 120.0
# (hour, lamp_on, dimming) edges of the auto/schedule programme
PROGRAMME = ((0.0, True, 50), (6.0, False, 100), (18.0, True, 100))


class LampModel(Behaviour):
    step_s = 10.0
    ranges = {
        "voltage": (180.0, 260.0),
        "current": (0.0, 2.0),
        "power": (0.0, 400.0),
        "tilt_angle": (-30.0, 30.0),
        "cabinet_temp": (-30.0, 70.0),
        "dimming": (0.0, 100.0),
    }
    events = ("tilt", "door")

    def __init__(self, rng: random.Random, start_s: float, rated_w: float = RATED_W) -> None:
        super().__init__(rng, start_s)
        self.rated_w = rated_w
        self.ev_tilt = Event(rate_per_day=0.01, duration_s=3600.0)
        self.ev_door = Event(rate_per_day=0.05, duration_s=900.0)
        self.lean = self.rng.uniform(-1.0, 1.0)  # the pole's permanent lean, degrees
        self.values = {
            "lamp_on": False,
            "dimming": 100,
            "light_mode": AUTO,
            "voltage": 230.0,
            "current": 0.0,
            "power": 0.0,
            "energy": 0.0,
            "tilt_angle": self.lean,
            "tilt_alarm": False,
            "door_open": False,
            "cabinet_temp": 15.0,
        }
        self._apply_programme(hour_of_day(self.t), force=True)
        self._electrics()

    def _apply_programme(self, h: float, *, force: bool = False, prev_h: float = -1.0) -> None:
        if self.values["light_mode"] == MANUAL:
            return
        current = max((e for e in PROGRAMME if e[0] <= h), default=PROGRAMME[-1])
        crossed = force or (prev_h > h) or (prev_h < current[0] <= h)
        if crossed:
            self.values["lamp_on"] = current[1]
            self.values["dimming"] = current[2]

    def _electrics(self) -> None:
        v = self.values
        on = bool(v["lamp_on"])
        dim = float(v["dimming"] or 0)
        power = self.rated_w * dim / 100.0 if on else 0.0
        voltage = float(v["voltage"] or 230.0)
        v["power"] = round(power, 1)
        v["current"] = round(power / voltage, 3) if voltage > 0 else 0.0

    def _step(self, t: float, dt: float) -> None:
        v = self.values
        h0, h1 = hour_of_day(t), hour_of_day(t + dt)
        self._apply_programme(h1, prev_h=h0)
        v["voltage"] = round(230.0 + 4.0 * daily_wave(t, 3.0) + self.noise(0.8), 1)
        self._electrics()
        v["energy"] = float(v["energy"] or 0.0) + float(v["power"] or 0.0) * dt / 3.6e6
        self.ev_tilt.maybe_start(t, dt, self.rng)
        self.ev_door.maybe_start(t, dt, self.rng)
        tilted = self.ev_tilt.active(t + dt)
        v["tilt_angle"] = round(self.lean + (18.0 if tilted else 0.0) + self.noise(0.05), 2)
        v["tilt_alarm"] = abs(self.num("tilt_angle")) > 10.0
        v["door_open"] = self.ev_door.active(t + dt)
        ambient = 12.0 + 8.0 * daily_wave(t, 15.0)
        v["cabinet_temp"] = round(ambient + self.num("power") / 20.0 + self.noise(0.1), 1)

    def write(self, point: str, value: Value) -> None:
        super().write(point, value)
        if point in ("lamp_on", "dimming") and isinstance(value, bool | int | float):
            self.values[point] = bool(value) if point == "lamp_on" else int(value)
        self._electrics()

    def reboot(self) -> None:
        """The driver's energy counter is volatile; mode and programme come back to auto."""
        self.values["energy"] = 0.0
        self.values["light_mode"] = AUTO
        self._apply_programme(hour_of_day(self.t), force=True)
        self._electrics()
