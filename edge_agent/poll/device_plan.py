"""What to read from one device: its points grouped by interval, each group planned into requests.

Points sharing an interval are polled together (one scheduled job per group). The planner merges
neighbouring points into few requests; breaks learnt from refused merged reads (exception 2) are
remembered here and every group is re-planned with them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from edge_agent.config.model import DeviceConfig
from edge_agent.profiles.model import AtPoint, ModbusPoint, Profile, Table
from edge_agent.profiles.planner import ReadRequest, plan, rtu_frame_bytes

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Group:
    interval_s: float
    points: tuple[ModbusPoint, ...]
    at_points: tuple[AtPoint, ...] = ()
    requests: list[ReadRequest] = field(default_factory=list)


def point_interval(device: DeviceConfig, point: ModbusPoint | AtPoint) -> float:
    if device.interval_s is not None:
        return device.interval_s
    return point.reporting.interval_s


class DevicePlan:
    def __init__(self, device: DeviceConfig, profile: Profile) -> None:
        self.device = device
        self.profile = profile
        self.max_gap = device.max_gap if device.max_gap is not None else profile.max_gap
        self.breaks: set[tuple[Table, int]] = set()
        by_interval: dict[float, tuple[list[ModbusPoint], list[AtPoint]]] = {}
        for p in profile.points:
            mb, at = by_interval.setdefault(point_interval(device, p), ([], []))
            if isinstance(p, ModbusPoint):
                mb.append(p)
            else:
                at.append(p)
        self.groups = [
            Group(interval, tuple(mb), tuple(at))
            for interval, (mb, at) in sorted(by_interval.items())
        ]
        self.replan()

    def replan(self) -> None:
        for g in self.groups:
            g.requests = plan(g.points, max_gap=self.max_gap, breaks=self.breaks)

    def add_break(self, brk: tuple[Table, int]) -> None:
        """Remember that no read may cross ``brk`` on this device; re-plan every group."""
        if brk not in self.breaks:
            self.breaks.add(brk)
            log.info(
                "read_split device=%s table=%s break=%d", self.device.name, brk[0].value, brk[1]
            )
            self.replan()

    @property
    def requests(self) -> list[ReadRequest]:
        return [r for g in self.groups for r in g.requests]

    def smallest_request(self) -> ReadRequest | None:
        """The cheapest read (fewest bytes on an RTU line): the quarantine probe."""
        reqs = self.requests
        if not reqs:
            return None
        return min(reqs, key=lambda r: (sum(rtu_frame_bytes(r.table, r.count)), r.address))
