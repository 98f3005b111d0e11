"""Synthetic readings shaped like a street cabinet's (energy meters, lamp controllers, air sensors).

Used by the benchmarks, the soak/chaos agent and tests to drive the pipeline without devices.
Deterministic for a given ``start``: reading i always has the same device, point, unit and value.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from edge_agent.readings import Quality, Reading

_POINTS: tuple[tuple[str, str], ...] = (
    ("voltage_l1", "V"),
    ("current_l1", "A"),
    ("active_power", "W"),
    ("energy_total", "kWh"),
    ("lamp_level", "%"),
    ("pm2_5", "ug/m3"),
)


def synthetic_readings(
    n: int,
    *,
    start: int = 0,
    devices: int = 8,
    alarm_every: int = 0,
    bad_every: int = 0,
    clock_synced: bool = True,
) -> Iterator[Reading]:
    """``n`` readings numbered ``start``..``start+n-1``; every ``alarm_every``-th is an alarm."""
    mono0 = time.monotonic_ns()
    off = time.time_ns() - mono0
    for i in range(start, start + n):
        point, unit = _POINTS[i % len(_POINTS)]
        mono = mono0 + (i - start) * 1000
        bad = bool(bad_every) and i % bad_every == bad_every - 1
        yield Reading(
            device=f"meter-{(i // len(_POINTS)) % devices:02d}",
            point=point,
            value=None if bad else round(230.0 + (i % 97) * 0.1, 1),
            unit=unit,
            ts_ns=mono + off,
            mono_ns=mono,
            quality=Quality.BAD if bad else Quality.GOOD,
            reason="timeout" if bad else "",
            alarm=bool(alarm_every) and i % alarm_every == alarm_every - 1,
            clock_synced=clock_synced,
        )
