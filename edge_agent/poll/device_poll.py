"""Polling one Modbus device: run a group's requests, keep its health, turn registers into readings.

Failure rules:

* timeout / frame error / closed bus: the device failed. Its group's points get BAD readings with
  the reason, the rest of the group is not tried (it would only cost more bus time), and the health
  counts the failure (quarantine after three in a row).
* exception response: the device is alive. A read refused with ILLEGAL_DATA_ADDRESS is narrowed
  at once by bisection (``planner.split``): the parts the device accepts are read and decoded, a
  point refused alone is UNREADABLE (reason ``exc:2``), and what this proved is kept in the
  device's learned address map (``address_map``): the next plan reads only the readable points,
  in the fewest requests the device accepts. Unreadable points are not read every cycle: they get
  their UNREADABLE reading without a transaction and are tried again on the quarantine schedule.
  Any other exception code gives the request's points BAD ``exc:N``.
* quarantined: nothing is read except, when the backoff allows, one probe (the device's smallest
  request); readings repeat the last value as STALE (report filter: heartbeat only). A device
  that comes back from quarantine may have been rebooted or replaced: its learned map is dropped.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Sequence

from edge_agent.bus.base import ModbusBus
from edge_agent.config.model import DeviceConfig
from edge_agent.errors import BusError, BusTimeout, CodecError, FrameError, GatewayTargetFailed
from edge_agent.errors import ModbusException as ModbusExc
from edge_agent.platform.clock import ClockProbe
from edge_agent.poll.address_map import Lesson
from edge_agent.poll.device_base import DeviceBase, Emit, Offer, OfferGood, failure_reason
from edge_agent.poll.device_plan import Group, SharedPlans
from edge_agent.poll.health import GRANULARITY_S
from edge_agent.poll.quality import Range, judge
from edge_agent.profiles import codec
from edge_agent.profiles.model import (
    DataType,
    ModbusPoint,
    Order,
    Point,
    Profile,
    plausible_range,
)
from edge_agent.profiles.planner import ReadRequest, split
from edge_agent.readings import Quality, Value

log = logging.getLogger(__name__)

# a request's points with their register slice, compiled decoder, plausible range and, for a
# plain one-register unsigned point, the (scale, offset) that decodes its register inline
_Direct = tuple[int, int] | tuple[float, float] | None
_Decoding = tuple[tuple[ModbusPoint, int, int, codec.Decoder, Range | None, _Direct], ...]

# every request's decoding, by the request's identity (each entry holds its request, so the id
# stays that request's): the devices of one profile share their requests (SharedPlans), so one
# entry serves all of them; equal requests of other plans share the decoding itself (_SHARED)
_BY_REQUEST: dict[int, tuple[ReadRequest, _Decoding]] = {}
_BY_REQUEST_MAX = 4096
_SHARED: dict[tuple[object, ...], _Decoding] = {}
_SHARED_MAX = 4096


def _shared_decoding(req: ReadRequest) -> _Decoding:
    key = (req.table, req.address, req.count, req.points)
    dec = _SHARED.get(key)
    if dec is None:
        if len(_SHARED) >= _SHARED_MAX:
            _SHARED.clear()
        a = req.address
        dec = _SHARED[key] = tuple((p, p.address - a, p.end - a, codec.decoder(p),
                                    plausible_range(p), _direct(p)) for p in req.points)
    return dec


def _direct(p: ModbusPoint) -> _Direct:
    """(scale, offset) when ``p``'s value is its one register times scale plus offset, exactly
    as its decoder computes it (a big-endian uint16 register: the Modbus default); else None.
    Integral scaling stays in ints (the decoder's ``int(raw) * scale + offset``)."""
    if (p.type is not DataType.UINT16 or p.order is not Order.ABCD or p.count != 1
            or p.table.is_bits):
        return None
    if codec.integral_scaling(p.scale, p.offset):
        return int(p.scale), int(p.offset)
    return p.scale, p.offset


def decoding(req: ReadRequest) -> _Decoding:
    """``req``'s points with their slice of the answer, decoder and plausible range (cached)."""
    entry = _BY_REQUEST.get(id(req))
    if entry is None or entry[0] is not req:
        if len(_BY_REQUEST) >= _BY_REQUEST_MAX:
            _BY_REQUEST.clear()
        entry = _BY_REQUEST[id(req)] = (req, _shared_decoding(req))
    return entry[1]


class DevicePoller(DeviceBase):
    """A Modbus device (RTU or TCP) behind a ``ModbusBus`` owner."""

    __slots__ = ("bus",)

    def __init__(
        self,
        device: DeviceConfig,
        profile: Profile,
        bus: ModbusBus,
        timeout_max_s: float,
        emit: Emit,
        clock: ClockProbe,
        rng: random.Random | None = None,
        granularity_s: float = GRANULARITY_S,
        offer: Offer | None = None,
        plans: SharedPlans | None = None,
        offer_good: OfferGood | None = None,
    ) -> None:
        """``offer_good``: where a request's GOOD values go, all at once (else ``offer``, one
        call a value, else ``emit``)."""
        super().__init__(device, profile, bus.name, timeout_max_s, emit, clock, rng,
                         granularity_s, offer, plans, offer_good)
        self.bus = bus

    @property
    def bus_name(self) -> str:
        return self.bus.name

    def _good(self, req: ReadRequest, regs: Sequence[int]) -> None:
        """Decode an answer (one clock read per request, taken when it arrived: the health's
        last good answer)."""
        if len(regs) < req.count:
            raise FrameError(f"response has {len(regs)} values, request read {req.count}")
        health = self.health
        mono, wall = health.last_good_mono_ns or 0, health.last_good_ns or 0
        out = self._out
        synced = out.clock.state().synced
        last_values, places = self.last_values, self._places
        reading = self._reading
        good = Quality.GOOD
        name = self.device.name
        # straight to the poller's filter, unless read_now collects the values: the GOOD
        # values of the request in one call (``goods``: those not handed over yet, so every
        # reading still leaves in the points' order), else one call each
        offer = out.offer if self._collect is None else None
        offer_good = out.offer_good if offer is not None else None
        goods: list[tuple[Point, Value]] = []
        for p, lo, hi, dec, valid, direct in decoding(req):
            raw = regs[lo]
            if direct is not None and raw.__class__ is int and 0 <= raw <= 0xFFFF:
                value: Value = raw * direct[0] + direct[1]  # the decoder's result, no call
            else:
                try:
                    value = dec(regs[lo:hi])
                except CodecError as e:
                    if log.isEnabledFor(logging.DEBUG):
                        log.debug("decode_failed device=%s point=%s err=%s", self.device.name,
                                  p.name, e)
                    if goods:
                        goods = self._hand_over(offer_good, goods, mono, wall, synced)
                    reading(p, None, Quality.BAD, "decode", mono, wall, synced)
                    continue
            if value.__class__ is float and not math.isfinite(value):
                if goods:
                    goods = self._hand_over(offer_good, goods, mono, wall, synced)
                reading(p, None, Quality.BAD, "nan" if math.isnan(value) else "inf",
                        mono, wall, synced)
                continue
            if valid is not None and not (
                # the common case, a plain number within range, without a call
                (value.__class__ is int or value.__class__ is float)
                and valid[0] <= value <= valid[1]
            ):
                q, why = judge(value, valid)
                if q is not good:  # implausible: published with its value, not remembered
                    if goods:
                        goods = self._hand_over(offer_good, goods, mono, wall, synced)
                    reading(p, value, q, why, mono, wall, synced)
                    continue
            last_values[places[p.name]] = value
            if offer_good is not None:
                goods.append((p, value))
            elif offer is not None:
                offer(name, p, value, good, "", mono, wall, synced)
            else:
                reading(p, value, good, "", mono, wall, synced)
        if goods:
            self._hand_over(offer_good, goods, mono, wall, synced)

    def _hand_over(self, offer_good: OfferGood | None, goods: list[tuple[Point, Value]],
                   mono: int, wall: int, synced: bool) -> list[tuple[Point, Value]]:
        """Hand the GOOD values gathered so far to ``offer_good``; a new empty list."""
        if offer_good is not None:
            offer_good(self.device.name, goods, mono, wall, synced)
        return []

    # -- transactions ------------------------------------------------------------------------

    async def _transact(self, req: ReadRequest, timeout_s: float = 0.0) -> list[int]:
        """One read with the adaptive timeout (or ``timeout_s``, at least the bus's minimum);
        feeds the RTT estimator and the health."""
        floor = self.bus.min_timeout_s(req.table, req.count)
        timeout = max(floor, timeout_s) if timeout_s else self.health.timeout(floor)
        self.last_timeout_s = timeout
        t0 = time.monotonic()
        try:
            try:
                regs = await self.bus.read(
                    self.device.unit_id, req.table, req.address, req.count, timeout_s=timeout
                )
            except ModbusExc as e:  # a gateway answering for a unit that did not: not alive
                if e.code not in GatewayTargetFailed.CODES:
                    raise
                raise GatewayTargetFailed(e.code, self.device.unit_id) from e
        except BusError as e:
            self._account(req, e, t0, floor)
            raise
        self._account(req, regs, t0, floor)
        return regs

    def _account(self, req: ReadRequest, result: list[int] | BusError, t0: float,
                 floor: float) -> None:
        """Health and RTT bookkeeping of one finished transaction started at ``t0``."""
        if isinstance(result, list):
            self._answered(t0, floor)
            self.requests_done += 1
        elif isinstance(result, ModbusExc):  # an answer: the device is alive
            self._answered(t0, floor)
        else:
            if isinstance(result, BusTimeout):
                self.health.on_timeout()
            now = time.monotonic()
            # what the bus owner added beyond our timeout (a guard silence, a hold of the line)
            # will be added to a probe too
            extra = max(0.0, now - t0 - self.last_timeout_s)
            self.health.on_failure(now, failure_reason(result), self.bus.name, now - t0,
                                   self._probe_cost(), extra)

    def _answered(self, t0: float, floor: float) -> None:
        mono_ns = time.monotonic_ns()
        wall_ns = time.time_ns()
        now = mono_ns / 1e9
        self.health.sample(now - t0 - floor)
        if self.health.on_success(now, wall_ns, mono_ns):  # back from quarantine: rebooted?
            self._plan.forget("revived")  # (nothing to forget on a shared plan)

    async def read_request(self, req: ReadRequest) -> bool:
        """Read ``req`` and emit its readings. False when the device failed (not answered)."""
        try:
            regs = await self._transact(req)
        except ModbusExc as e:
            if e.code == ModbusExc.ILLEGAL_DATA_ADDRESS:
                return await self._narrow(req)
            self._bad(req.points, failure_reason(e))
            return True
        except BusError as e:
            self._bad(req.points, failure_reason(e))
            return False
        self._good(req, regs)
        return True

    async def _narrow(self, req: ReadRequest) -> bool:
        """``req`` was refused with ILLEGAL_DATA_ADDRESS: bisect it down to what the device
        accepts, emitting every point's reading, and keep what that proved in the learned map.
        False when the device failed meanwhile."""
        lesson = Lesson()
        try:
            return await self._bisect(req, lesson)
        finally:
            if lesson:
                self.plan.learn(lesson, time.monotonic())

    async def _bisect(self, req: ReadRequest, lesson: Lesson) -> bool:
        cut = split(req)
        if cut is None:  # one point (or points sharing registers) refused alone
            lesson.unreadable.append(req.points)
            self._unreadable(req.points)
            return True
        parts, brk = cut
        both_accepted = True
        for i, part in enumerate(parts):
            try:
                regs = await self._transact(part)
            except ModbusExc as e:
                both_accepted = False
                if e.code != ModbusExc.ILLEGAL_DATA_ADDRESS:
                    self._bad(part.points, failure_reason(e))
                elif not await self._bisect(part, lesson):
                    rest = [p for q in parts[i + 1 :] for p in q.points]
                    self._bad(rest, self.health.last_error or "timeout")
                    return False
                continue
            except BusError as e:
                self._bad([p for q in parts[i:] for p in q.points], failure_reason(e))
                return False
            self._good(part, regs)
        if both_accepted:  # the refusal lies across the cut itself
            lesson.breaks.append(brk)
        return True

    async def _try_unreadable(self, req: ReadRequest) -> bool:
        """Read an unreadable cluster again. Accepted: the device changed (new firmware, other
        unit): the learned map is dropped and the values are GOOD readings. Refused (or another
        exception): still unreadable, tried again later. False when the device failed."""
        learnt = self.plan.learnt
        t0 = time.monotonic()
        try:
            regs = await self._transact(req)
        except ModbusExc:
            now = time.monotonic()
            learnt.probed(now, now - t0)
            self._unreadable(req.points)
            return True
        except BusError as e:
            now = time.monotonic()
            learnt.probed(now, now - t0)
            self._bad(req.points, failure_reason(e))
            return False
        names = ",".join(p.name for p in req.points)
        self._plan.forget(f"reads_again:{names}")
        self._good(req, regs)
        return True

    async def _read_now(self, point: str | None) -> bool:
        """The plan's requests, then every unreadable cluster tried again (a technician asking
        is a good moment to find out whether the device changed)."""
        learnt = self._plan.known
        unreadable = learnt.requests(point) if learnt is not None else []
        for req in self._plan.requests:
            wanted = point is None or any(p.name == point for p in req.points)
            if wanted and not await self.read_request(req):
                return False
        for req in unreadable:
            if not await self._try_unreadable(req):
                return False
        return True

    def _probe_cost(self) -> float:
        """What a probe costs when the device answers as it used to: the learnt timeout of its
        smallest request, without the doubling after timeouts."""
        req = self._plan.smallest_request()
        if req is None:
            return 0.0
        return self.health.timeout(self.bus.min_timeout_s(req.table, req.count),
                                   backed_off=False)

    async def probe(self) -> bool:
        """One cheap read of a quarantined device, with the timeout its schedule affords (see
        ``health``). True when it answered (even an exception)."""
        req = self._plan.smallest_request()
        if req is None:
            return True
        return await self._timed_probe(self._transact(req, self.health.probe_timeout_s),
                                       ModbusExc)

    async def run_group(self, group: Group) -> None:
        """The scheduled job: poll one interval group (or probe / go stale when quarantined)."""
        async with self:  # the device is its own lock (``lock``)
            if self.health.quarantined and (
                not self.health.probe_due(time.monotonic()) or not await self.probe()
            ):
                self._stale([*group.points, *group.at_points])
                return
            # re-planned since the job got it (a probe that revived the device, too): the group
            # at its place now
            group = self._plan.groups[group.index]
            if group.unreadable:
                self._unreadable(group.unreadable)
            requests = list(group.requests)
            for i, req in enumerate(requests):
                if not await self.read_request(req):
                    rest = [p for r in requests[i + 1 :] for p in r.points]
                    self._bad(rest, self.health.last_error or "timeout")
                    return
            learnt = self._plan.known
            if learnt is not None and learnt.probe_due(time.monotonic()):
                await self._try_unreadable(learnt.probe_request())
