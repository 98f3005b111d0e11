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

import asyncio
import logging
import math
import random
import time
from collections.abc import Callable, Sequence

from edge_agent.bus.base import ModbusBus
from edge_agent.config.model import DeviceConfig
from edge_agent.errors import BusClosed, BusError, BusTimeout, CodecError, FrameError
from edge_agent.errors import ModbusException as ModbusExc
from edge_agent.poll.clock import ClockProbe
from edge_agent.poll.device_plan import DevicePlan, Group
from edge_agent.poll.health import GRANULARITY_S, DeviceHealth
from edge_agent.profiles import codec
from edge_agent.profiles.model import Point, Profile, Reporting
from edge_agent.profiles.planner import ReadRequest, split
from edge_agent.readings import Quality, Reading, Value

log = logging.getLogger(__name__)

Emit = Callable[[Reading, Reporting], None]


def failure_reason(exc: BusError) -> str:
    if isinstance(exc, BusTimeout):
        return "timeout"
    if isinstance(exc, ModbusExc):
        return f"exc:{exc.code}"
    if isinstance(exc, FrameError):
        return "crc" if "crc" in str(exc).lower() else "frame"
    if isinstance(exc, BusClosed):
        return "closed"
    return "bus"


def judge(value: Value) -> tuple[Quality, str]:
    if isinstance(value, float) and not math.isfinite(value):
        return Quality.BAD, "nan" if math.isnan(value) else "inf"
    return Quality.GOOD, ""


class DeviceBase:
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
    ) -> None:
        self.device = device
        self.bus_name = bus_name
        self.plan = DevicePlan(device, profile)
        self.health = DeviceHealth.create(
            device.name, timeout_max_s, rng or random.Random(), granularity_s
        )
        self.lock = asyncio.Lock()  # polls and writes of this device, one at a time
        self._emit = emit
        self._clock = clock
        self.last_values: dict[str, Value] = {}
        self.requests_done = 0
        self.registers_read = 0
        self.last_timeout_s = timeout_max_s
        self._collect: dict[str, Value] | None = None  # set by read_now

    def _reading(self, p: Point, value: Value, q: Quality, reason: str, mono: int,
                 wall: int, synced: bool) -> None:
        r = Reading(self.device.name, p.name, value, p.unit, wall, mono, q, reason,
                    p.reporting.alarm, synced)
        if self._collect is not None:
            self._collect[p.name] = value
        self._emit(r, p.reporting)

    async def read_now(self, point: str | None = None) -> dict[str, Value]:
        """Read every point (or one) at once, quarantine or not; {point: value}, None for a BAD
        point. BusTimeout / BusError when the device does not answer. Caller holds the lock."""
        self._collect = {}
        try:
            if not await self._read_now(point):
                why = self.health.last_error or "timeout"
                cls = BusTimeout if why == "timeout" else BusError
                raise cls(f"device={self.device.name} bus={self.bus_name}: {why}")
            got = self._collect
        finally:
            self._collect = None
        return got if point is None else {point: got.get(point)}

    async def _read_now(self, point: str | None) -> bool:
        raise NotImplementedError

    def _value(self, p: Point, value: Value, mono: int, wall: int, synced: bool) -> None:
        """A decoded value: GOOD, or BAD when it is NaN / infinite."""
        q, reason = judge(value)
        if q is Quality.GOOD:
            self.last_values[p.name] = value
        self._reading(p, value if q is Quality.GOOD else None, q, reason, mono, wall, synced)

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

    async def run_group(self, group: Group) -> None:
        raise NotImplementedError


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
    ) -> None:
        super().__init__(device, profile, bus.name, timeout_max_s, emit, clock, rng,
                         granularity_s)
        self.bus = bus

    def _good(self, req: ReadRequest, regs: Sequence[int]) -> None:
        mono, wall = time.monotonic_ns(), time.time_ns()
        synced = self._clock.state().synced
        for p, raw in req.slices(regs):
            try:
                value = codec.decode(p, raw)
            except CodecError as e:
                log.debug("decode_failed device=%s point=%s err=%s", self.device.name, p.name, e)
                self._reading(p, None, Quality.BAD, "decode", mono, wall, synced)
                continue
            self._value(p, value, mono, wall, synced)

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
        except ModbusExc:
            self._answered(t0, floor)
            raise
        except BusError as e:
            if isinstance(e, BusTimeout):
                self.health.rtt.on_timeout()
            now = time.monotonic()
            self.health.on_failure(now, failure_reason(e), self.bus.name, now - t0)
            raise
        self._answered(t0, floor)
        self.requests_done += 1
        self.registers_read += req.count
        return regs

    def _answered(self, t0: float, floor: float) -> None:
        now = time.monotonic()
        self.health.rtt.sample(now - t0 - floor)
        self.health.on_success(now, time.time_ns())

    async def read_request(self, req: ReadRequest) -> bool:
        """Read ``req`` and emit its readings. False when the device failed (not answered)."""
        try:
            regs = await self._transact(req)
        except ModbusExc as e:
            if e.code == ModbusExc.ILLEGAL_DATA_ADDRESS and len(req.points) > 1:
                try:
                    parts, brk = split(req)
                except ValueError:  # points sharing registers: nothing to split
                    parts = []
                if parts:
                    self.plan.add_break(brk)
                    for part in parts:
                        if not await self.read_request(part):
                            return False
                    return True
            self._bad(req.points, failure_reason(e))
            return True
        except BusError as e:
            self._bad(req.points, failure_reason(e))
            return False
        self._good(req, regs)
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
        self.health.probes += 1
        t0 = time.monotonic()
        try:
            await self._transact(req)
        except ModbusExc:
            return True
        except BusError:
            return False
        finally:
            self.health.probe_time_s += time.monotonic() - t0
        return True

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
