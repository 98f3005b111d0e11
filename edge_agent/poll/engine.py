"""The Poller: profiles + bus owners in, readings out.

Modbus devices (RTU or TCP owners) and AT modules (``AtClient``) alike. One ``BusScheduler`` per
bus runs that bus's jobs earliest-deadline-first: a serial line (RTU or AT) strictly one at a
time, a TCP endpoint up to its configured concurrency; buses run in parallel.
Each device contributes one periodic job per interval group, with its first release spread
uniformly over the interval. Readings pass the report-by-exception filter before reaching ``sink``.

``stop()`` is a plain method (safe from a signal handler or another task); ``run()`` returns once
every job has been cancelled and awaited. Bus owners belong to the caller and are not closed here.

Errors (all from edge_agent.errors): the constructor raises ``ConfigError`` with every problem
(a device on the wrong kind of bus, a point the planner cannot read in one request); ``run()``
raises ``ContractError`` when called twice on one Poller; ``read_now`` / ``write`` raise
``CommandRefused`` (unknown device / point, not writable), ``CodecError`` / ``BoundsError`` (a
value of the wrong type or out of bounds: checked before the bus is touched) and ``BusError`` from
the transaction. Device failures during polling never escape: they become BAD / STALE readings.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, cast

from edge_agent.bus.base import ModbusBus
from edge_agent.config.model import AgentConfig, BusKind, SerialBus
from edge_agent.errors import (
    CommandRefused,
    ConfigError,
    ContractError,
    PlanError,
    Problem,
)
from edge_agent.platform.clock import ClockProbe
from edge_agent.poll.device_base import DeviceBase, Judged
from edge_agent.poll.device_plan import Group, SharedPlans
from edge_agent.poll.device_poll import DevicePoller
from edge_agent.poll.health import GRANULARITY_S, NETWORK_GRANULARITY_S
from edge_agent.poll.report import ReportFilter
from edge_agent.poll.scheduler import NETWORK_TICK_S, BusScheduler, Job, network_tick
from edge_agent.poll.status import DeviceStatus, device_status
from edge_agent.poll.write import write_point
from edge_agent.profiles import codec
from edge_agent.profiles.model import ModbusPoint, Point, Protocol, Reporting
from edge_agent.readings import Quality, Reading, Value

if TYPE_CHECKING:  # the AT poller is imported with the first AT device (a TCP district has none)
    from edge_agent.bus.at_points import AtCommander

log = logging.getLogger(__name__)

Sink = Callable[[Reading], None]
SinkMany = Callable[[list[Reading]], None]
class _PollJob(Job):
    """A device's interval group as the scheduler's job: the job carries what it polls (no
    slot object and no job -> slot table: ~130 bytes a device)."""

    __slots__ = ("group", "poller")

    def __init__(self, device: str, interval_s: float, release: float, poller: DeviceBase,
                 group: Group) -> None:
        Job.__init__(self, device, interval_s, release)
        self.poller = poller
        self.group = group


class Poller:
    def __init__(
        self,
        config: AgentConfig,
        buses: Mapping[str, ModbusBus | AtCommander],
        sink: Sink,
        *,
        clock: ClockProbe | None = None,
        rng: random.Random | None = None,
        sink_many: SinkMany | None = None,
    ) -> None:
        """``sink`` gets every reading that passes the report filter, one call each; with
        ``sink_many`` they go there instead, a job's readings in one call when the job ends (one
        hand-over, e.g. one lock of the batcher, instead of one per reading), ``read_now``'s and
        ``write``'s before they return."""
        self._config = config
        self._buses = buses
        self._sink = sink
        self._sink_many = sink_many
        self._out: list[Reading] = []  # readings of the running jobs, for sink_many
        self._clock = clock or ClockProbe()
        self._rng = rng or random.Random()
        self._filter = ReportFilter()
        self._stop = asyncio.Event()
        self.readings_made = 0  # before the report filter
        self.readings_emitted = 0  # after it
        self.planned_at: float | None = None  # monotonic time the first releases count from
        self.devices: dict[str, DeviceBase] = {}
        # every device's jobs, in the devices' order (one list, not a tuple a device)
        self._jobs: list[_PollJob] = []
        self.schedulers: dict[str, BusScheduler] = {}
        problems: list[Problem] = []
        plans = SharedPlans()  # the devices of one profile share its plans
        # one bound method each for every device (not three new ones a device: 192 bytes)
        emit, offer, offer_good = self._emit, self._offer, self._offer_good
        run_job = self._run_job  # (and one for every bus's scheduler)
        src = str(config.source)
        for i, dev in enumerate(config.devices):
            where = f"devices[{i}]"
            profile = config.profiles.get(dev.profile)
            bus_cfg = config.buses.get(dev.bus)
            bus = buses.get(dev.bus)
            if profile is None:
                problems.append(
                    Problem(src, f"{where}.profile", f"unknown profile {dev.profile!r}")
                )
                continue
            if bus_cfg is None or bus is None:
                problems.append(Problem(src, f"{where}.bus", f"no bus owner for {dev.bus!r}"))
                continue
            rng = self._rng  # one generator for every device's jitter (a Random is 2.5 KiB)
            tmax = bus_cfg.timeout_max_s
            if profile.protocol is Protocol.AT:
                if not isinstance(bus_cfg, SerialBus) or bus_cfg.kind is not BusKind.AT:
                    problems.append(Problem(src, f"{where}.bus",
                                            f"AT device on {dev.bus!r}, which is not an AT line"))
                    continue
                from edge_agent.poll.at_poll import AtDevicePoller

                self.devices[dev.name] = AtDevicePoller(
                    dev, profile, cast("AtCommander", bus), dev.bus, tmax, emit, self._clock,
                    rng, plans)
            else:
                if isinstance(bus_cfg, SerialBus) and bus_cfg.kind is BusKind.AT:
                    problems.append(Problem(src, f"{where}.bus",
                                            f"Modbus device on AT line {dev.bus!r}"))
                    continue
                gran = GRANULARITY_S if isinstance(bus_cfg, SerialBus) else NETWORK_GRANULARITY_S
                try:
                    self.devices[dev.name] = DevicePoller(
                        dev, profile, cast(ModbusBus, bus), tmax, emit, self._clock, rng,
                        gran, offer, plans, offer_good)
                except PlanError as e:  # the planner cannot read a point in one request
                    problems.append(Problem(profile.source or src, f"{where}: {dev.name}", str(e)))
                    continue
            # the filter keeps its slots of the device's points in the device's record (passed
            # with each of its readings: ``_record``)
            self._filter.adopt(self.devices[dev.name].last_values)
            if dev.bus not in self.schedulers:
                if isinstance(bus_cfg, SerialBus):
                    sched = BusScheduler(dev.bus, 1, run_job)
                else:  # the grid is set from every job's interval in _make_jobs
                    sched = BusScheduler(dev.bus, bus_cfg.concurrency, run_job,
                                         tick_s=NETWORK_TICK_S)
                self.schedulers[dev.bus] = sched
        if problems:
            raise ConfigError(problems)

    # -- readings ----------------------------------------------------------------------------

    def _emit(self, reading: Reading, rep: Reporting) -> None:
        self.readings_made += 1
        if not self._filter.should_emit(reading, rep, self._record(reading.device)):
            return
        self.readings_emitted += 1
        self._deliver(reading)

    def _record(self, device: str) -> list[Any] | None:
        """``device``'s record, which the report filter adopted (None: not a device of this
        poller)."""
        dp = self.devices.get(device)
        return None if dp is None else dp.last_values

    def _deliver(self, reading: Reading) -> None:
        if self._sink_many is not None:
            self._out.append(reading)
            return
        try:
            self._sink(reading)
        except Exception:
            log.exception("sink_failed device=%s point=%s", reading.device, reading.point)

    def _flush(self) -> None:
        """Hand the readings gathered for ``sink_many`` over (end of a job, read_now, write)."""
        out = self._out
        if out and self._sink_many is not None:
            self._out = []
            try:
                self._sink_many(out)
            except Exception:
                log.exception("sink_failed readings=%d", len(out))

    def _offer(self, device: str, p: Point, value: Value, q: Quality, reason: str, mono: int,
               wall: int, synced: bool) -> None:
        """``_emit`` for a reading not built yet: most never pass the filter, so build it after."""
        self.readings_made += 1
        rep = p.reporting
        if not self._filter.offer(device, p.name, value, q, reason, mono, rep,
                                  self.devices[device].last_values):
            return
        self.readings_emitted += 1
        reading = Reading(device, p.name, value, p.unit, wall, mono, q, reason, rep.alarm, synced)
        if self._sink_many is not None:
            self._out.append(reading)
            return
        try:
            self._sink(reading)
        except Exception:
            log.exception("sink_failed device=%s point=%s", device, p.name)

    def _offer_good(self, device: str, items: list[tuple[Point, Value]], mono: int, wall: int,
                    synced: bool) -> None:
        """``_offer`` for one request's GOOD values at once (one call a request, not two a
        reading): the report filter's pass, then the readings that passed, in order."""
        self.readings_made += len(items)
        passed = self._filter.offer_good(device, items, mono, self.devices[device].last_values)
        if not passed:
            return
        self.readings_emitted += len(passed)
        good = Quality.GOOD
        made = [Reading(device, p.name, value, p.unit, wall, mono, good, "", p.reporting.alarm,
                        synced) for p, value in passed]
        if self._sink_many is not None:
            self._out += made
            return
        for reading in made:
            try:
                self._sink(reading)
            except Exception:
                log.exception("sink_failed device=%s point=%s", device, reading.point)

    # -- scheduling ---------------------------------------------------------------------------

    def _make_jobs(self, now: float) -> None:
        jobs: list[_PollJob] = []
        for name, dp in self.devices.items():
            phase = self._rng.random()  # same phase for all groups: a device's reads stay close
            sched = self.schedulers[dp.device.bus]
            for g in dp.current_plan.groups:
                if not g.requests and not g.at_points:
                    continue
                # no key: the scheduler names an unkeyed job by device and interval when it
                # logs (a thousand such strings held for a rare log line)
                job = _PollJob(name, g.interval_s, now + phase * g.interval_s, dp, g)
                jobs.append(job)
                sched.queue.add(job)
        self._jobs = jobs
        self._set_network_grid()

    def _set_network_grid(self) -> None:
        shortest: dict[str, float] = {}
        rate = 0.0
        for job in self._jobs:
            bus, iv = job.poller.device.bus, job.interval_s
            if self.schedulers[bus].tick_s > 0 and iv > 0:
                rate += 1.0 / iv
                shortest[bus] = min(iv, shortest.get(bus, iv))
        ticks: dict[float, float] = {}  # one float a grid, not one a bus
        for bus, iv in shortest.items():
            tick = ticks.get(iv)
            if tick is None:
                tick = ticks[iv] = network_tick(rate, iv)
            self.schedulers[bus].tick_s = tick

    async def _run_job(self, job: Job) -> None:
        slot = cast(_PollJob, job)  # every job of this poller's schedulers is one
        try:
            await slot.poller.run_group(slot.group)
        finally:
            self._flush()

    async def run(self) -> None:
        """Poll until ``stop()``. A second concurrent ``run()`` is an error."""
        if self._jobs:
            raise ContractError("Poller.run() is already running (or ran): make a new Poller")
        self.planned_at = time.monotonic()
        self._make_jobs(self.planned_at)
        log.info("poller_started devices=%d buses=%d", len(self.devices), len(self.schedulers))
        # no task per bus: each scheduler's workers are tasks only while they have work soon
        crash: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        stopper = asyncio.create_task(self._stop.wait())
        try:
            for s in self.schedulers.values():
                s.start(crash)
            ends: list[asyncio.Future[Any]] = [stopper, crash]
            await asyncio.wait(ends, return_when=asyncio.FIRST_COMPLETED)
            if crash.done():
                crash.result()  # a scheduler's worker crashed (a bug): surface it
        finally:
            stopper.cancel()
            await asyncio.gather(stopper, *(s.close() for s in self.schedulers.values()),
                                 return_exceptions=True)
            log.info("poller_stopped readings=%d emitted=%d", self.readings_made,
                     self.readings_emitted)

    def stop(self) -> None:
        self._stop.set()

    @property
    def jobs(self) -> list[Job]:
        """Every scheduled job (one per device and interval group), once ``run()`` started."""
        return list(self._jobs)

    # -- status -------------------------------------------------------------------------------

    def health_view(self) -> dict[str, dict[str, Any]]:
        """What counting the answering devices needs (rollout's probation and the retained
        status' inventory, every quarter status interval): each device's consecutive failures,
        last good answer and last error -- not its whole status (a sixteenth of the work)."""
        out: dict[str, dict[str, Any]] = {}
        for name, dp in self.devices.items():
            h = dp.health
            out[name] = {"consecutive_failures": h.consecutive, "last_good_ns": h.last_good_ns,
                         "last_error": h.last_error}
        return out

    def status(self) -> dict[str, DeviceStatus]:
        out: dict[str, DeviceStatus] = {}
        jobs: dict[str, list[Job]] = {}
        for job in self._jobs:
            jobs.setdefault(job.device, []).append(job)
        for name, dp in self.devices.items():
            out[name] = device_status(
                device=name,
                bus=dp.bus_name,
                unit=dp.device.unit_id,
                health=dp.health,
                jobs=jobs.get(name, []),
                timeout_s=dp.last_timeout_s,
                requests=dp.requests_done,
                breaks=len(dp.current_plan.breaks),
                unreadable=len(dp.current_plan.unreadable),
            )
        return out

    # -- on demand --------------------------------------------------------------------------

    async def read_now(self, device: str, point: str | None = None) -> dict[str, Value]:
        """Read ``device`` (every point, or ``point``) now, serialised with the polls, even when
        quarantined. {point: value}, None for a point that read BAD; the readings also go through
        the report filter to the sink. CommandRefused for an unknown device / point, BusError
        when the device does not answer."""
        return {k: v[0] for k, v in (await self.read_judged(device, point)).items()}

    async def read_judged(self, device: str, point: str | None = None) -> dict[str, Judged]:
        """``read_now`` with each value's quality and reason as the poller decided them (what
        the readings it published carry: good, out_of_range, bad, unreadable)."""
        dp = self.devices.get(device)
        if dp is None:
            raise CommandRefused("unknown_device", device)
        if point is not None:
            try:
                dp.current_plan.profile.point(point)
            except KeyError:
                raise CommandRefused("unknown_point", f"{device}.{point}") from None
        sched = self.schedulers[dp.device.bus]
        try:
            async with sched.slots, dp.lock:
                return await dp.read_now(point)
        finally:
            self._flush()

    # -- writes -------------------------------------------------------------------------------

    async def write(self, device: str, point: str, value: Value) -> Value:
        """Write ``value`` to ``device.point`` through the bus owner, serialised with the polls.

        Returns the confirmed value read back. CommandRefused for an unknown device / point, a
        non-Modbus or read-only point; CodecError / BoundsError for a value of the wrong type or
        out of bounds (checked before the bus is touched); BusError from the transaction.
        """
        dp = self.devices.get(device)
        if dp is None:
            raise CommandRefused("unknown_device", device)
        if not isinstance(dp, DevicePoller):
            raise CommandRefused("not_writable", f"{device} is not a Modbus device")
        try:
            p = dp.current_plan.profile.point(point)
        except KeyError:
            raise CommandRefused("unknown_point", f"{device}.{point}") from None
        if not isinstance(p, ModbusPoint):
            raise CommandRefused("not_writable", f"{device}.{point} is not a Modbus point")
        if not p.writable:
            raise CommandRefused("not_writable", f"{device}.{point} is read-only")
        codec.check_write(p, value)
        sched = self.schedulers[dp.device.bus]
        timeout = self._config.buses[dp.device.bus].timeout_max_s
        async with sched.slots, dp.lock:
            confirmed = await write_point(
                dp.bus, dp.device.unit_id, p, value, timeout_s=timeout, device=device
            )
        synced = self._clock.state().synced
        reading = Reading(device, p.name, confirmed, p.unit, time.time_ns(), time.monotonic_ns(),
                          Quality.GOOD, "", p.reporting.alarm, synced)
        dp.remember(p.name, confirmed)
        self._emit(reading, p.reporting)
        self._flush()
        return confirmed
