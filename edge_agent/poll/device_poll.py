"""Polling one Modbus device: run a group's requests, keep its health, turn registers into readings.

Failure rules:

* timeout / frame error / closed bus: the device failed. Its group's points get BAD readings with
  the reason, the rest of the group is not tried (it would only cost more bus time), and the health
  counts the failure (quarantine after three in a row).
* exception response: the device is alive. A merged read refused with ILLEGAL_DATA_ADDRESS is split
  (``planner.split``), the break remembered for every later plan, and the parts read at once; a
  single point still refused gets BAD ``exc:2`` alone while its neighbours keep working.
* quarantined: nothing is read except, when the backoff allows, one probe (the device's smallest
  request); readings repeat the last value as STALE (report filter: heartbeat only).
"""

from __future__ import annotations

import abc
import asyncio
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Sequence

from edge_agent.bus.base import ModbusBus
from edge_agent.config.model import DeviceConfig
from edge_agent.errors import BusClosed, BusError, BusTimeout, CodecError, CrcError, FrameError
from edge_agent.errors import ModbusException as ModbusExc
from edge_agent.platform.clock import ClockProbe
from edge_agent.poll.device_plan import DevicePlan, Group
from edge_agent.poll.health import GRANULARITY_S, DeviceHealth
from edge_agent.poll.quality import Range, judge
from edge_agent.profiles import codec
from edge_agent.profiles.model import ModbusPoint, Point, Profile, Reporting, plausible_range
from edge_agent.profiles.planner import ReadRequest, split
from edge_agent.readings import Quality, Reading, Value

log = logging.getLogger(__name__)

Emit = Callable[[Reading, Reporting], None]
# The hot path's emit: (device, point, value, quality, reason, mono_ns, wall_ns, clock_synced);
# the receiver builds the Reading only if the report filter lets it through.
Offer = Callable[[str, Point, Value, Quality, str, int, int, bool], None]
# a request's points with their register slice, compiled decoder and plausible range
_Decoding = tuple[tuple[ModbusPoint, int, int, codec.Decoder, Range | None], ...]
_DECODINGS_MAX = 256


def failure_reason(exc: BusError) -> str:
    if isinstance(exc, BusTimeout):
        return "timeout"
    if isinstance(exc, ModbusExc):
        return f"exc:{exc.code}"
    if isinstance(exc, FrameError):
        return "crc" if isinstance(exc, CrcError) else "frame"
    if isinstance(exc, BusClosed):
        return "closed"
    return "bus"


class DeviceBase(abc.ABC):
    """What every polled device has: a plan, a health record, a lock and the reading helpers."""

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
    ) -> None:
        self.device = device
        self.bus_name = bus_name
        self.plan = DevicePlan(device, profile)
        self.health = DeviceHealth.create(
            device.name, timeout_max_s, rng or random.Random(), granularity_s
        )
        self.lock = asyncio.Lock()  # polls and writes of this device, one at a time
        self._emit = emit
        self._offer = offer
        self._clock = clock
        self.last_values: dict[str, Value] = {}
        self.requests_done = 0
        self.registers_read = 0
        self.last_timeout_s = timeout_max_s
        self._collect: dict[str, Value] | None = None  # set by read_now

    def _reading(self, p: Point, value: Value, q: Quality, reason: str, mono: int,
                 wall: int, synced: bool) -> None:
        if self._collect is not None:
            self._collect[p.name] = value
        if self._offer is not None:
            self._offer(self.device.name, p, value, q, reason, mono, wall, synced)
            return
        r = Reading(self.device.name, p.name, value, p.unit, wall, mono, q, reason,
                    p.reporting.alarm, synced)
        self._emit(r, p.reporting)

    async def read_now(self, point: str | None = None) -> dict[str, Value]:
        """Read every point (or one) at once, quarantine or not; {point: value}, None for a BAD
        point. BusTimeout / BusError when the device does not answer. Caller holds the lock."""
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
        return got if point is None else {point: got.get(point)}

    @abc.abstractmethod
    async def _read_now(self, point: str | None) -> bool:
        """Each kind of device / transport provides this."""

    def _value(self, p: Point, value: Value, mono: int, wall: int, synced: bool) -> None:
        """A decoded value: GOOD, OUT_OF_RANGE (value kept) or BAD (NaN / infinite)."""
        q, reason = judge(value, plausible_range(p))
        if q is Quality.GOOD:
            self.last_values[p.name] = value
        self._reading(p, None if q is Quality.BAD else value, q, reason, mono, wall, synced)

    def _bad(self, points: Sequence[Point], reason: str) -> None:
        mono, wall = time.monotonic_ns(), time.time_ns()
        synced = self._clock.state().synced
        for p in points:
            self._reading(p, None, Quality.BAD, reason, mono, wall, synced)

    def _stale(self, points: Sequence[Point]) -> None:
        mono, wall = time.monotonic_ns(), time.time_ns()
        synced = self._clock.state().synced
        for p in points:
            if p.name in self.last_values:
                value = self.last_values[p.name]
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


class DevicePoller(DeviceBase):
    """A Modbus device (RTU or TCP) behind a ``ModbusBus`` owner."""

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
    ) -> None:
        super().__init__(device, profile, bus.name, timeout_max_s, emit, clock, rng,
                         granularity_s, offer)
        self.bus = bus
        self._decodings: dict[int, tuple[ReadRequest, _Decoding]] = {}
        self._answer_mono_ns = 0  # when the last answer arrived (set by _answered)
        self._answer_wall_ns = 0

    def _decoding(self, req: ReadRequest) -> _Decoding:
        """``req``'s points with their slice of the answer and decoder, computed once."""
        entry = self._decodings.get(id(req))
        if entry is None or entry[0] is not req:
            if len(self._decodings) >= _DECODINGS_MAX:
                self._decodings.clear()
            a = req.address
            entry = (req, tuple((p, p.address - a, p.end - a, codec.decoder(p),
                                 plausible_range(p)) for p in req.points))
            self._decodings[id(req)] = entry
        return entry[1]

    def _good(self, req: ReadRequest, regs: Sequence[int]) -> None:
        """Decode an answer (one clock read per request, taken when it arrived)."""
        if len(regs) < req.count:
            raise FrameError(f"response has {len(regs)} values, request read {req.count}")
        mono, wall = self._answer_mono_ns, self._answer_wall_ns
        synced = self._clock.state().synced
        last_values = self.last_values
        reading = self._reading
        good = Quality.GOOD
        name = self.device.name
        # straight to the poller's filter, unless read_now collects the values
        offer = self._offer if self._collect is None else None
        for p, lo, hi, dec, valid in self._decoding(req):
            try:
                value = dec(regs[lo:hi])
            except CodecError as e:
                if log.isEnabledFor(logging.DEBUG):
                    log.debug("decode_failed device=%s point=%s err=%s", self.device.name,
                              p.name, e)
                reading(p, None, Quality.BAD, "decode", mono, wall, synced)
                continue
            if value.__class__ is float and not math.isfinite(value):
                reading(p, None, Quality.BAD, "nan" if math.isnan(value) else "inf",
                        mono, wall, synced)
                continue
            if valid is not None:
                q, why = judge(value, valid)
                if q is not good:  # implausible: published with its value, not remembered
                    reading(p, value, q, why, mono, wall, synced)
                    continue
            last_values[p.name] = value
            if offer is not None:
                offer(name, p, value, good, "", mono, wall, synced)
            else:
                reading(p, value, good, "", mono, wall, synced)

    # -- transactions ------------------------------------------------------------------------

    async def _transact(self, req: ReadRequest) -> list[int]:
        """One read with the adaptive timeout; feeds the RTT estimator and the health."""
        floor = self.bus.min_timeout_s(req.table, req.count)
        timeout = self.health.rtt.timeout(floor)
        self.last_timeout_s = timeout
        t0 = time.monotonic()
        try:
            regs = await self.bus.read(
                self.device.unit_id, req.table, req.address, req.count, timeout_s=timeout
            )
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
            self.registers_read += req.count
        elif isinstance(result, ModbusExc):  # an answer: the device is alive
            self._answered(t0, floor)
        else:
            if isinstance(result, BusTimeout):
                self.health.rtt.on_timeout()
            now = time.monotonic()
            self.health.on_failure(now, failure_reason(result), self.bus.name, now - t0)

    def _answered(self, t0: float, floor: float) -> None:
        mono_ns = self._answer_mono_ns = time.monotonic_ns()
        wall_ns = self._answer_wall_ns = time.time_ns()
        now = mono_ns / 1e9
        self.health.rtt.sample(now - t0 - floor)
        self.health.on_success(now, wall_ns)

    async def read_request(self, req: ReadRequest) -> bool:
        """Read ``req`` and emit its readings. False when the device failed (not answered)."""
        try:
            regs = await self._transact(req)
        except ModbusExc as e:
            return await self._refused(req, e)
        except BusError as e:
            self._bad(req.points, failure_reason(e))
            return False
        self._good(req, regs)
        return True

    async def _refused(self, req: ReadRequest, e: ModbusExc) -> bool:
        """An exception answer: split a merged read refused with ILLEGAL_DATA_ADDRESS and read
        the parts, else BAD ``exc:N``. False when the device failed meanwhile."""
        if e.code == ModbusExc.ILLEGAL_DATA_ADDRESS and len(req.points) > 1:
            cut = split(req)  # None: one point (or points sharing registers), nothing to split
            if cut is not None:
                parts, brk = cut
                self.plan.add_break(brk)
                for part in parts:
                    if not await self.read_request(part):
                        return False
                return True
        self._bad(req.points, failure_reason(e))
        return True

    async def _read_now(self, point: str | None) -> bool:
        for req in self.plan.requests:
            if point is not None and all(p.name != point for p in req.points):
                continue
            if not await self.read_request(req):
                return False
        return True

    async def probe(self) -> bool:
        """One cheap read of a quarantined device. True when it answered (even an exception)."""
        req = self.plan.smallest_request()
        if req is None:
            return True
        return await self._timed_probe(self._transact(req), ModbusExc)

    async def run_group(self, group: Group) -> None:
        """The scheduled job: poll one interval group (or probe / go stale when quarantined)."""
        async with self.lock:
            if self.health.quarantined and (
                not self.health.probe_due(time.monotonic()) or not await self.probe()
            ):
                self._stale([*group.points, *group.at_points])
                return
            requests = list(group.requests)
            for i, req in enumerate(requests):
                if not await self.read_request(req):
                    rest = [p for r in requests[i + 1 :] for p in r.points]
                    self._bad(rest, self.health.last_error or "timeout")
                    return
