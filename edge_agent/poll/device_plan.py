"""What to read from one device: its points grouped by interval, each group planned into requests.

Points sharing an interval are polled together (one scheduled job per group). The planner merges
neighbouring points into few requests. What refused reads (exception 2) taught -- points the device
cannot read, places no read may cross (``address_map.AddressMap``) -- is kept here: every group is
planned over its readable points only, honouring the proven breaks, and knows its unreadable ones.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from edge_agent.config.model import DeviceConfig
from edge_agent.errors import ContractError
from edge_agent.poll.address_map import NO_BREAKS, AddressMap, Break, Lesson
from edge_agent.poll.report import record
from edge_agent.profiles.model import AtPoint, ModbusPoint, Profile
from edge_agent.profiles.planner import ReadRequest, plan, rtu_frame_bytes

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Group:
    """One interval group of a device's plan. Never changed: the devices of one profile share
    their groups (``SharedPlans``); a device that learnt something gets groups of its own, and
    the plan's group now at the place of one handed out before (a job's) is
    ``plan.groups[group.index]``."""

    interval_s: float
    points: tuple[ModbusPoint, ...]
    at_points: tuple[AtPoint, ...] = ()
    requests: list[ReadRequest] = field(default_factory=list)
    unreadable: tuple[ModbusPoint, ...] = ()  # learnt: not in ``requests``, not read each cycle
    index: int = 0  # its place in the plan's ``groups``


def point_interval(device: DeviceConfig, point: ModbusPoint | AtPoint) -> float:
    if device.interval_s is not None:
        return device.interval_s
    return point.reporting.interval_s


_NO_NAMES: frozenset[str] = frozenset()
_GroupShape = tuple[float, tuple[ModbusPoint, ...], tuple[AtPoint, ...]]


class SharedPlans:
    """What the devices of one profile have in common, computed once (one per Poller): the points
    of each interval group, the profile's own plan of each group and the groups themselves. A
    thousand devices of a few profiles then share a few dozen groups and request lists instead of
    holding their own; a device whose learnt address map changes its plan gets its own
    (``DevicePlan.replan``)."""

    __slots__ = ("_devices", "_groups", "_places", "_plans", "_pristine", "_shared")

    def __init__(self) -> None:
        # keyed by identity; each entry holds its key object, so the id stays that object's
        self._groups: dict[tuple[int, float | None], tuple[Profile, list[_GroupShape]]] = {}
        self._plans: dict[tuple[int, int],
                          tuple[tuple[ModbusPoint, ...], list[ReadRequest]]] = {}
        self._pristine: dict[tuple[int, float | None, int],
                             tuple[Profile, tuple[Group, ...]]] = {}
        self._places: dict[int, tuple[Profile, dict[str, int], list[Any]]] = {}
        self._shared: dict[Hashable, object] = {}
        self._devices: dict[tuple[int, float | None, int, int],
                            tuple[Profile, random.Random | None, SharedPlan]] = {}

    def shared(self, key: Hashable, make: Callable[[], T]) -> T:
        """The one object of ``key`` (``make()`` the first time): what every device of the
        poller holds alike (e.g. where its readings go)."""
        hit = self._shared.get(key)
        if hit is None:
            hit = self._shared[key] = make()
        return cast(T, hit)

    def record(self, profile: Profile, unset: object) -> tuple[dict[str, int], list[Any]]:
        """A new record of a device of ``profile`` (``poll.report.record``: its last GOOD
        values, ``unset`` at first, and the report filter's slots) and the places of its GOOD
        values by point name (shared: never to be changed)."""
        hit = self._places.get(id(profile))
        if hit is None or hit[0] is not profile:
            hit = self._places[id(profile)] = (
                profile, *record([p.name for p in profile.points], unset))
        return hit[1], hit[2].copy()

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

    def pristine(self, device: DeviceConfig, profile: Profile,
                 max_gap: int) -> tuple[Group, ...]:
        """The groups of a device of ``profile`` that learnt nothing: the profile's own plan of
        each, shared by every such device (never to be changed in place)."""
        key = (id(profile), device.interval_s, max_gap)
        hit = self._pristine.get(key)
        if hit is None or hit[0] is not profile:
            groups = tuple(Group(iv, mb, at, self.plan(mb, max_gap), (), k)
                           for k, (iv, mb, at) in enumerate(self.groups(device, profile)))
            hit = self._pristine[key] = (profile, groups)
        return hit[1]


    def device_plan(self, device: DeviceConfig, profile: Profile,
                    rng: random.Random | None) -> SharedPlan:
        """The plan of every device of ``profile`` (and interval, max_gap) that learnt
        nothing, one object for them all: a device that learns gets its own (``own``)."""
        max_gap = device.max_gap if device.max_gap is not None else profile.max_gap
        key = (id(profile), device.interval_s, max_gap, id(rng))
        hit = self._devices.get(key)
        if hit is None or hit[0] is not profile or hit[1] is not rng:
            hit = self._devices[key] = (profile, rng, SharedPlan(device, profile, rng, self))
        return hit[2]


class DevicePlan:
    """A device's groups: the profile's shared ones (``SharedPlans.pristine``) until its learnt
    address map changes the plan, then its own. The map itself is made when the device first
    has something to learn (a thousand devices that never do hold none)."""

    # six slots: 80 bytes a device (``max_gap`` is read only when planning)
    __slots__ = ("_learnt", "_rng", "_shared", "device", "groups", "profile")

    def __init__(self, device: DeviceConfig, profile: Profile,
                 rng: random.Random | None = None, shared: SharedPlans | None = None) -> None:
        self.device = device
        self.profile = profile
        self._rng = rng
        self._learnt: AddressMap | None = None
        self._shared = shared or SharedPlans()
        self.groups = self._shared.pristine(device, profile, self.max_gap)

    @property
    def max_gap(self) -> int:
        """The device's ``max_gap``, else its profile's."""
        gap = self.device.max_gap
        return gap if gap is not None else self.profile.max_gap

    @property
    def learnt(self) -> AddressMap:
        """The device's learned address map (made on first use)."""
        m = self._learnt
        if m is None:
            m = self._learnt = AddressMap(self.device.name, self._rng)
        return m

    @property
    def known(self) -> AddressMap | None:
        """The learned address map if one was made yet (None: nothing learnt ever)."""
        return self._learnt

    def replan(self) -> None:
        m = self._learnt
        max_gap = self.max_gap
        pristine = self._shared.pristine(self.device, self.profile, max_gap)
        if m is None or (not m.unreadable and not m.plan_breaks):
            self.groups = pristine  # the profile's own plan, as every such device has it
            return
        bad, breaks = m.unreadable, m.plan_breaks
        groups = []
        for g in pristine:
            readable = [p for p in g.points if p.name not in bad] if bad else g.points
            unreadable = tuple(p for p in g.points if p.name in bad) if bad else ()
            groups.append(Group(g.interval_s, g.points, g.at_points,
                                plan(readable, max_gap=max_gap, breaks=breaks), unreadable,
                                g.index))
        self.groups = tuple(groups)

    def learn(self, lesson: Lesson, now: float) -> None:
        """Take what a refused read's narrowing found; re-plan every group if it was new."""
        if self.learnt.learn(lesson, now):
            self.replan()

    def forget(self, why: str) -> None:
        """The device may have changed: plan from the profile alone again."""
        if self._learnt is not None and self._learnt.forget(why):
            self.replan()

    def own(self, device: DeviceConfig) -> DevicePlan:
        """A plan of ``device``'s own, as this one is now (itself if it is one already)."""
        return self

    @property
    def breaks(self) -> frozenset[Break]:
        return NO_BREAKS if self._learnt is None else self._learnt.breaks

    @property
    def unreadable(self) -> frozenset[str]:
        """Names of the points learnt unreadable."""
        return _NO_NAMES if self._learnt is None else self._learnt.unreadable

    @property
    def requests(self) -> list[ReadRequest]:
        return [r for g in self.groups for r in g.requests]

    def smallest_request(self) -> ReadRequest | None:
        """The cheapest read (fewest bytes on an RTU line): the quarantine probe."""
        reqs = self.requests
        if not reqs:
            return None
        return min(reqs, key=lambda r: (sum(rtu_frame_bytes(r.table, r.count)), r.address))


class SharedPlan(DevicePlan):
    """The plan every device of a profile (and interval, max_gap) holds until it learns
    something (``SharedPlans.device_plan``: a thousand devices of two profiles hold two plans,
    not a thousand): it never learns; ``own`` gives a device its own plan to learn in."""

    __slots__ = ()

    @property
    def learnt(self) -> AddressMap:
        raise ContractError("a plan shared by the devices of a profile learns nothing: "
                            "use the device's own (DeviceBase.plan)")

    def learn(self, lesson: Lesson, now: float) -> None:
        raise ContractError("a plan shared by the devices of a profile learns nothing: "
                            "use the device's own (DeviceBase.plan)")

    def own(self, device: DeviceConfig) -> DevicePlan:
        return DevicePlan(device, self.profile, self._rng, self._shared)
