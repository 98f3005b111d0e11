"""What to read from one device: its points grouped by interval, each group planned into requests.

Points sharing an interval are polled together (one scheduled job per group). The planner merges
neighbouring points into few requests. What refused reads (exception 2) taught -- points the device
cannot read, places no read may cross (``address_map.AddressMap``) -- is kept here: every group is
planned over its readable points only, honouring the proven breaks, and knows its unreadable ones.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field

from edge_agent.config.model import DeviceConfig
from edge_agent.poll.address_map import AddressMap, Break, Lesson
from edge_agent.profiles.model import AtPoint, ModbusPoint, Profile
from edge_agent.profiles.planner import ReadRequest, plan, rtu_frame_bytes

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Group:
    interval_s: float
    points: tuple[ModbusPoint, ...]
    at_points: tuple[AtPoint, ...] = ()
    requests: list[ReadRequest] = field(default_factory=list)
    unreadable: tuple[ModbusPoint, ...] = ()  # learnt: not in ``requests``, not read each cycle


def point_interval(device: DeviceConfig, point: ModbusPoint | AtPoint) -> float:
    if device.interval_s is not None:
        return device.interval_s
    return point.reporting.interval_s


_GroupShape = tuple[float, tuple[ModbusPoint, ...], tuple[AtPoint, ...]]


class SharedPlans:
    """What the devices of one profile have in common, computed once (one per Poller): the points
    of each interval group and the profile's own plan of each group. A thousand devices of a few
    profiles then share a few dozen request lists instead of holding one each; a device whose
    learnt address map changes its plan gets its own (``DevicePlan.replan``)."""

    __slots__ = ("_groups", "_plans")

    def __init__(self) -> None:
        # keyed by identity; each entry holds its key object, so the id stays that object's
        self._groups: dict[tuple[int, float | None], tuple[Profile, list[_GroupShape]]] = {}
        self._plans: dict[tuple[int, int],
                          tuple[tuple[ModbusPoint, ...], list[ReadRequest]]] = {}

    def groups(self, device: DeviceConfig, profile: Profile) -> list[_GroupShape]:
        key = (id(profile), device.interval_s)
        hit = self._groups.get(key)
        if hit is None or hit[0] is not profile:
            by_interval: dict[float, tuple[list[ModbusPoint], list[AtPoint]]] = {}
            for p in profile.points:
                mb, at = by_interval.setdefault(point_interval(device, p), ([], []))
                if isinstance(p, ModbusPoint):
                    mb.append(p)
                else:
                    at.append(p)
            shapes = [(iv, tuple(mb), tuple(at)) for iv, (mb, at) in sorted(by_interval.items())]
            hit = self._groups[key] = (profile, shapes)
        return hit[1]

    def plan(self, points: tuple[ModbusPoint, ...], max_gap: int) -> list[ReadRequest]:
        """The plan of ``points`` (a group's, from ``groups``) with nothing learnt: shared, never
        to be changed in place."""
        key = (id(points), max_gap)
        hit = self._plans.get(key)
        if hit is None or hit[0] is not points:
            hit = self._plans[key] = (points, plan(points, max_gap=max_gap))
        return hit[1]


class DevicePlan:
    __slots__ = ("_shared", "device", "groups", "learnt", "max_gap", "profile")

    def __init__(self, device: DeviceConfig, profile: Profile,
                 rng: random.Random | None = None, shared: SharedPlans | None = None) -> None:
        self.device = device
        self.profile = profile
        self.max_gap = device.max_gap if device.max_gap is not None else profile.max_gap
        self.learnt = AddressMap(device.name, rng)
        self._shared = shared or SharedPlans()
        # each group starts on the profile's shared plan (not a new empty list, then replaced);
        # a tuple: one block, not a list's two
        self.groups = tuple(Group(iv, mb, at, self._shared.plan(mb, self.max_gap))
                            for iv, mb, at in self._shared.groups(device, profile))
        self.replan()

    def replan(self) -> None:
        bad, breaks = self.learnt.unreadable, self.learnt.plan_breaks
        for g in self.groups:
            if not bad and not breaks:  # the profile's own plan, as every such device has it
                g.requests = self._shared.plan(g.points, self.max_gap)
                g.unreadable = ()
                continue
            readable = [p for p in g.points if p.name not in bad] if bad else g.points
            g.requests = plan(readable, max_gap=self.max_gap, breaks=breaks)
            g.unreadable = tuple(p for p in g.points if p.name in bad) if bad else ()

    def learn(self, lesson: Lesson, now: float) -> None:
        """Take what a refused read's narrowing found; re-plan every group if it was new."""
        if self.learnt.learn(lesson, now):
            self.replan()

    def forget(self, why: str) -> None:
        """The device may have changed: plan from the profile alone again."""
        if self.learnt.forget(why):
            self.replan()

    @property
    def breaks(self) -> frozenset[Break]:
        return self.learnt.breaks

    @property
    def requests(self) -> list[ReadRequest]:
        return [r for g in self.groups for r in g.requests]

    def smallest_request(self) -> ReadRequest | None:
        """The cheapest read (fewest bytes on an RTU line): the quarantine probe."""
        reqs = self.requests
        if not reqs:
            return None
        return min(reqs, key=lambda r: (sum(rtu_frame_bytes(r.table, r.count)), r.address))
