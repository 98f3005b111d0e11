"""Polling one AT-command module (e.g. an NB-IoT radio) through its ``AtClient``.

Each point is one command; points of a group sharing a command (``AT+NUESTATS`` answers several)
send it once and parse every point from the same answer lines. Failure rules mirror Modbus:

* timeout / closed port: the module failed; the group's remaining points get BAD, health counts it;
* ERROR / +CME ERROR (AtError), or an answer not matching the point's pattern: the module is alive,
  that point alone is BAD (``cme:N`` / ``at_error`` / ``decode``);
* quarantined: one probe (the group's first command) when the backoff allows, else STALE.

AT commands differ widely in how long they take (a registration query vs. ``AT+CSQ``), so the
module gets the bus's ``timeout_max_s`` rather than an adaptive timeout.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence

from edge_agent.bus.at_points import AtCommander, parse_point
from edge_agent.config.model import DeviceConfig
from edge_agent.errors import AtError, BusError, CodecError
from edge_agent.platform.clock import ClockProbe
from edge_agent.poll.device_base import DeviceBase, Emit, failure_reason
from edge_agent.poll.device_plan import Group, SharedPlans
from edge_agent.profiles.model import AtPoint, Profile
from edge_agent.readings import Quality

log = logging.getLogger(__name__)


def at_reason(e: AtError) -> str:
    return f"cme:{e.cme}" if e.cme is not None else "at_error"


class AtDevicePoller(DeviceBase):
    __slots__ = ("_bus_name", "client", "timeout_s")

    def __init__(
        self,
        device: DeviceConfig,
        profile: Profile,
        client: AtCommander,
        bus_name: str,
        timeout_max_s: float,
        emit: Emit,
        clock: ClockProbe,
        rng: random.Random | None = None,
        plans: SharedPlans | None = None,
    ) -> None:
        super().__init__(device, profile, bus_name, timeout_max_s, emit, clock, rng,
                         plans=plans)
        self._bus_name = bus_name
        self.client = client
        self.timeout_s = timeout_max_s

    @property
    def bus_name(self) -> str:
        return self._bus_name

    async def _command(self, cmd: str) -> list[str]:
        """Run one command; AtError (module alive) passes through, other bus errors count."""
        t0 = time.monotonic()
        try:
            lines = await self.client.command(cmd, self.timeout_s)
        except AtError:
            self.health.on_success(time.monotonic(), time.time_ns())
            raise
        except BusError as e:
            now = time.monotonic()
            self.health.on_failure(now, failure_reason(e), self.bus_name, now - t0)
            raise
        now = time.monotonic()
        self.health.sample(now - t0)
        self.health.on_success(now, time.time_ns())
        self.requests_done += 1
        return lines

    async def probe(self, points: Sequence[AtPoint]) -> bool:
        if not points:
            return True
        return await self._timed_probe(self._command(points[0].command), AtError)

    async def run_group(self, group: Group) -> None:
        points = group.at_points
        async with self:  # the device is its own lock (``lock``)
            if self.health.quarantined and (
                not self.health.probe_due(time.monotonic()) or not await self.probe(points)
            ):
                self._stale(points)
                return
            await self._read_points(points)

    async def _read_now(self, point: str | None) -> bool:
        points = self._plan.profile.at_points
        return await self._read_points([p for p in points if point in (None, p.name)])

    async def _read_points(self, points: Sequence[AtPoint]) -> bool:
        """Read ``points`` (one command per distinct command). False if the module failed."""
        answers: dict[str, list[str] | AtError] = {}
        for i, p in enumerate(points):
            if p.command not in answers:
                try:
                    answers[p.command] = await self._command(p.command)
                except AtError as e:
                    answers[p.command] = e
                except BusError as e:
                    self._bad(points[i:], failure_reason(e))
                    return False
            self._point(p, answers[p.command])
        return True

    def _point(self, p: AtPoint, answer: list[str] | AtError) -> None:
        mono, wall = time.monotonic_ns(), time.time_ns()
        synced = self._out.clock.state().synced
        if isinstance(answer, AtError):
            self._reading(p, None, Quality.BAD, at_reason(answer), mono, wall, synced)
            return
        try:
            value = parse_point(p, answer)
        except AtError as e:  # no line matched the pattern
            log.debug("at_no_match device=%s point=%s err=%s", self.device.name, p.name, e)
            self._reading(p, None, Quality.BAD, "no_match", mono, wall, synced)
            return
        except CodecError as e:
            log.debug("decode_failed device=%s point=%s err=%s", self.device.name, p.name, e)
            self._reading(p, None, Quality.BAD, "decode", mono, wall, synced)
            return
        self._value(p, value, mono, wall, synced)
