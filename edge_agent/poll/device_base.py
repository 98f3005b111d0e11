"""What every polled device has (Modbus or AT): plan, health record, lock and reading helpers.

``failure_reason`` turns a bus error into the short reason a BAD reading carries.
"""

from __future__ import annotations

import abc
import enum
import random
import time
from collections.abc import Awaitable, Callable, Sequence

from edge_agent.config.model import DeviceConfig
from edge_agent.errors import (
    BusClosed,
    BusError,
    BusTimeout,
    CrcError,
    FrameError,
    GatewayTargetFailed,
)
from edge_agent.errors import ModbusException as ModbusExc
from edge_agent.platform.clock import ClockProbe
from edge_agent.poll.device_plan import DevicePlan, Group, SharedPlans
from edge_agent.poll.gate import Gate
from edge_agent.poll.health import GRANULARITY_S, DeviceHealth
from edge_agent.poll.quality import judge
from edge_agent.profiles.model import Point, Profile, Reporting, plausible_range
from edge_agent.readings import Quality, Reading, Value

Emit = Callable[[Reading, Reporting], None]
Judged = tuple[Value, Quality, str]  # a read-now answer: value, its quality and the reason
# The hot path's emit: (device, point, value, quality, reason, mono_ns, wall_ns, clock_synced);
# the receiver builds the Reading only if the report filter lets it through.
Offer = Callable[[str, Point, Value, Quality, str, int, int, bool], None]
# A request's GOOD values at once: (device, [(point, value)...], mono_ns, wall_ns, clock_synced)
OfferGood = Callable[[str, list[tuple[Point, Value]], int, int, bool], None]
UNREADABLE_REASON = f"exc:{ModbusExc.ILLEGAL_DATA_ADDRESS}"


class _Unset(enum.Enum):
    UNSET = "unset"


UNSET = _Unset.UNSET  # no GOOD value yet (``DeviceBase.last_values``)


def failure_reason(exc: BusError) -> str:
    if isinstance(exc, BusTimeout):
        return "timeout"
    if isinstance(exc, ModbusExc | GatewayTargetFailed):
        return f"exc:{exc.code}"
    if isinstance(exc, FrameError):
        return "crc" if isinstance(exc, CrcError) else "frame"
    if isinstance(exc, BusClosed):
        return "closed"
    return "bus"


class Outlets:
    """Where a device's readings go and the clock state they carry: the same for every device
    of a poller (one object for them all, not four slots a device)."""

    __slots__ = ("clock", "emit", "offer", "offer_good")

    def __init__(self, emit: Emit, offer: Offer | None, offer_good: OfferGood | None,
                 clock: ClockProbe) -> None:
        self.emit = emit
        self.offer = offer
        self.offer_good = offer_good
        self.clock = clock


class DeviceBase(Gate, abc.ABC):
    """What every polled device has: a plan, a health record, a lock and the reading helpers.

    A device is its own lock (``lock``: itself, a one-slot ``Gate``): polls and writes of the
    device, one at a time, without a lock object a device."""

    # a thousand devices: no per-instance dict (its values array and header, ~60 bytes each)
    __slots__ = (
        "_collect",
        "_out",
        "_places",
        "_plan",
        "device",
        "health",
        "last_timeout_s",
        "last_values",
        "requests_done",
    )

    def __init__(
        self,
        device: DeviceConfig,
        profile: Profile,
        bus_name: str,
        timeout_max_s: float,
        emit: Emit,
        clock: ClockProbe,
        rng: random.Random | None = None,
        granularity_s: float = GRANULARITY_S,
        offer: Offer | None = None,
        plans: SharedPlans | None = None,
        offer_good: OfferGood | None = None,
    ) -> None:
        """``plans``: shared with the other devices of the poller (the same profile's plans,
        where the readings go)."""
        Gate.__init__(self)
        self.device = device
        rng = rng or random.Random()
        plans = plans or SharedPlans()
        # the profile's plan, shared with its other devices until this one learns (``plan``)
        self._plan: DevicePlan = plans.device_plan(device, profile, rng)
        self.health = DeviceHealth.create(device.name, timeout_max_s, rng, granularity_s)
        self._out: Outlets = plans.shared(
            ("outlets", emit, offer, offer_good, clock),
            lambda: Outlets(emit, offer, offer_good, clock))
        # the last GOOD value of each point, at its place (``_places``, shared by the devices of
        # the profile) in the device's record: a list of pointers, not a dict of its own, which
        # the poller's report filter adopts (its slots of each point next to the GOOD value:
        # ``poll.report.record``), so a device has one list for both
        self._places, self.last_values = plans.record(profile, UNSET)
        self.requests_done = 0
        self.last_timeout_s = timeout_max_s
        self._collect: dict[str, Judged] | None = None  # set by read_now

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.device.name} bus={self.bus_name}>"

    @property
    @abc.abstractmethod
    def bus_name(self) -> str:
        """The bus the device is on (a Modbus device: its owner's name)."""

    @property
    def plan(self) -> DevicePlan:
        """The device's own plan (made from the profile's shared one on first use: what a
        caller changes, e.g. what it learns, is this device's alone)."""
        plan = self._plan
        if plan.__class__ is not DevicePlan:
            plan = self._plan = plan.own(self.device)
        return plan

    @property
    def current_plan(self) -> DevicePlan:
        """The plan as it is, to read (shared by the devices of its profile until this one
        learns something)."""
        return self._plan

    @property
    def lock(self) -> Gate:
        """Polls, reads and writes of this device, one at a time (the device itself)."""
        return self

    def last_value(self, point: str) -> Value | _Unset:
        """``point``'s last GOOD value (``UNSET``: none yet)."""
        value: Value | _Unset = self.last_values[self._places[point]]
        return value

    def remember(self, point: str, value: Value) -> None:
        """``value`` is ``point``'s last GOOD value now (a confirmed write)."""
        self.last_values[self._places[point]] = value

    def _reading(self, p: Point, value: Value, q: Quality, reason: str, mono: int,
                 wall: int, synced: bool) -> None:
        if self._collect is not None:
            self._collect[p.name] = (value, q, reason)
        out = self._out
        if out.offer is not None:
            out.offer(self.device.name, p, value, q, reason, mono, wall, synced)
            return
        r = Reading(self.device.name, p.name, value, p.unit, wall, mono, q, reason,
                    p.reporting.alarm, synced)
        out.emit(r, p.reporting)

    async def read_now(self, point: str | None = None) -> dict[str, Judged]:
        """Read every point (or one) at once, quarantine or not; {point: (value, quality,
        reason)} as the poller judged them (value None for a BAD point). BusTimeout / BusError
        when the device does not answer. Caller holds the lock."""
        self._collect = {}
        try:
            if not await self._read_now(point):
                why = self.health.last_error or "timeout"
                msg = f"device={self.device.name} bus={self.bus_name}: {why}"
                if why == "timeout":
                    raise BusTimeout(msg)
                raise BusError(msg)
            got = self._collect
        finally:
            self._collect = None
        if point is None:
            return got
        return {point: got.get(point, (None, Quality.BAD, "no value"))}

    @abc.abstractmethod
    async def _read_now(self, point: str | None) -> bool:
        """Each kind of device / transport provides this."""

    def _value(self, p: Point, value: Value, mono: int, wall: int, synced: bool) -> None:
        """A decoded value: GOOD, OUT_OF_RANGE (value kept) or BAD (NaN / infinite)."""
        q, reason = judge(value, plausible_range(p))
        if q is Quality.GOOD:
            self.last_values[self._places[p.name]] = value
        self._reading(p, None if q is Quality.BAD else value, q, reason, mono, wall, synced)

    def _bad(self, points: Sequence[Point], reason: str) -> None:
        mono, wall = time.monotonic_ns(), time.time_ns()
        synced = self._out.clock.state().synced
        for p in points:
            self._reading(p, None, Quality.BAD, reason, mono, wall, synced)

    def _unreadable(self, points: Sequence[Point]) -> None:
        mono, wall = time.monotonic_ns(), time.time_ns()
        synced = self._out.clock.state().synced
        for p in points:
            self._reading(p, None, Quality.UNREADABLE, UNREADABLE_REASON, mono, wall, synced)

    def _stale(self, points: Sequence[Point]) -> None:
        mono, wall = time.monotonic_ns(), time.time_ns()
        synced = self._out.clock.state().synced
        last, places = self.last_values, self._places
        for p in points:
            value = last[places[p.name]]
            if value is not UNSET:
                self._reading(p, value, Quality.STALE, "quarantined", mono, wall, synced)
            else:
                self._reading(p, None, Quality.BAD, "quarantined", mono, wall, synced)

    @abc.abstractmethod
    async def run_group(self, group: Group) -> None:
        """Each kind of device / transport provides this."""

    async def _timed_probe(self, ask: Awaitable[object],
                           answered: type[BusError]) -> bool:
        """One probe of a quarantined device with its bus time accounted. True when the device
        answered; an ``answered`` error (a Modbus exception, an AT ERROR) is an answer too."""
        self.health.probes += 1
        t0 = time.monotonic()
        try:
            await ask
        except answered:
            return True
        except BusError:
            return False
        finally:
            self.health.probe_time_s += time.monotonic() - t0
        return True
