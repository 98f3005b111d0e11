"""Status snapshots of the poller: one plain dict per device (for the CLI, the status topic)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TypedDict

from edge_agent.poll.health import DeviceHealth
from edge_agent.poll.scheduler import Job


class DeviceStatus(TypedDict):
    device: str
    bus: str
    unit: int
    last_good_ns: int | None  # wall clock of the last answer
    last_good_age_s: float | None  # seconds since then (monotonic)
    failures: int  # total failed transactions
    consecutive_failures: int
    last_error: str
    quarantined: bool
    probes: int
    failed_time_s: float  # bus time lost to failed transactions (timeouts, probes)
    missed_deadlines: int
    timeout_s: float  # adaptive timeout of the last request
    requests: int  # successful read requests
    breaks: int  # learnt places no read may cross (refused merged reads)
    unreadable: int  # learnt points the device refuses to read (quality unreadable)


def device_status(
    *,
    device: str,
    bus: str,
    unit: int,
    health: DeviceHealth,
    jobs: Iterable[Job],
    timeout_s: float,
    requests: int,
    breaks: int,
    unreadable: int,
) -> DeviceStatus:
    now = time.monotonic()
    age = None if health.last_good_mono is None else round(now - health.last_good_mono, 3)
    return DeviceStatus(
        device=device,
        bus=bus,
        unit=unit,
        last_good_ns=health.last_good_ns,
        last_good_age_s=age,
        failures=health.failures,
        consecutive_failures=health.consecutive,
        last_error=health.last_error,
        quarantined=health.quarantined,
        probes=health.probes,
        failed_time_s=round(health.failed_time_s, 4),
        missed_deadlines=sum(j.missed for j in jobs),
        timeout_s=round(timeout_s, 4),
        requests=requests,
        breaks=breaks,
        unreadable=unreadable,
    )
