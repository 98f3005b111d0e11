"""Simulated time: one clock per scenario, shared by every device model.

``now()`` is in simulated seconds since the scenario's day 0, 00:00. Real time is scaled by
``speed`` (``speed=60`` runs one simulated minute per real second); ``advance()`` jumps ahead, which
is how tests move time without sleeping (use ``speed=0`` for a clock that moves only when told).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

DAY_S = 86_400.0


class SimClock:
    def __init__(
        self,
        speed: float = 1.0,
        start_s: float = 6 * 3600.0,
        *,
        time_fn: Callable[[], float] = time.monotonic,
    ) -> None:
        if speed < 0:
            raise ValueError(f"SimClock speed must be >= 0, got {speed}")
        self._speed = float(speed)
        self._time_fn = time_fn
        self._lock = threading.Lock()
        self._base_real = time_fn()
        self._base_sim = float(start_s)

    @property
    def speed(self) -> float:
        return self._speed

    def now(self) -> float:
        """Simulated seconds since day 0, 00:00."""
        with self._lock:
            return self._base_sim + (self._time_fn() - self._base_real) * self._speed

    def advance(self, seconds: float) -> float:
        """Jump ``seconds`` of simulated time ahead; returns the new ``now()``."""
        if seconds < 0:
            raise ValueError("SimClock cannot go backwards")
        with self._lock:
            self._base_sim += seconds
        return self.now()

    def set_speed(self, speed: float) -> None:
        if speed < 0:
            raise ValueError(f"SimClock speed must be >= 0, got {speed}")
        with self._lock:
            real = self._time_fn()
            self._base_sim += (real - self._base_real) * self._speed
            self._base_real = real
            self._speed = float(speed)

    def time_of_day_h(self) -> float:
        return (self.now() % DAY_S) / 3600.0
