"""Reading a device straight from its bus while the daemon is stopped (bench work).

Never used while the daemon runs: two masters on one RS-485 line corrupt each other's frames (the
daemon holds the port exclusively; a direct read then fails with "port busy").
Modbus devices (RTU and TCP) are read with the planner's requests, AT modules point by point.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_agent.config.checks import effective_max_gap
from edge_agent.config.model import AgentConfig, SerialBus, TcpBus
from edge_agent.errors import (
    AtError,
    BusClosed,
    BusError,
    BusTimeout,
    CodecError,
    CommandRefused,
    EdgeAgentError,
)
from edge_agent.poll.quality import judge
from edge_agent.profiles.codec import decode
from edge_agent.profiles.model import AtPoint, ModbusPoint, Point, Protocol, plausible_range
from edge_agent.profiles.planner import plan
from edge_agent.readings import Quality, Value


@dataclass
class DirectRead:
    values: dict[str, Value] = field(default_factory=dict)  # None where the point failed
    errors: dict[str, str] = field(default_factory=dict)  # point -> why it has no value
    # point -> (quality, reason) by the poller's own rule: what the daemon would publish
    quality: dict[str, tuple[Quality, str]] = field(default_factory=dict)

    def judge(self, points: Sequence[Point]) -> None:
        """Each value's quality by ``poll.quality.judge`` against ``plausible_range`` (the one
        rule the poller applies), BAD with the error where there is no value."""
        for p in points:
            if p.name in self.values:
                value = self.values[p.name]
                self.quality[p.name] = (Quality.BAD, self.errors.get(p.name, "no value")) \
                    if value is None else judge(value, plausible_range(p))


def direct_read(cfg: AgentConfig, device: str, point: str | None) -> DirectRead:
    """Every point of ``device`` (or ``point``) read now. CommandRefused for an unknown name,
    BusClosed (PortDenied, PortBusy) when the line does not open, BusTimeout / BusError when
    the device answered nothing at all."""
    dev = next((d for d in cfg.devices if d.name == device), None)
    if dev is None:
        raise CommandRefused("unknown_device", device)
    profile = cfg.profiles[dev.profile]
    points = profile.points
    if point is not None:
        points = tuple(p for p in points if p.name == point)
        if not points:
            raise CommandRefused("unknown_point", f"{device}.{point}")
    bus_cfg = cfg.buses[dev.bus]
    if profile.protocol is Protocol.AT:
        assert isinstance(bus_cfg, SerialBus)
        at = [p for p in points if isinstance(p, AtPoint)]
        got = asyncio.run(_read_at(bus_cfg, at))
    else:
        mb = tuple(p for p in points if isinstance(p, ModbusPoint))
        got = asyncio.run(_read_modbus(bus_cfg, dev.unit_id, mb,
                                       effective_max_gap(dev, profile)))
    if got.errors and all(v is None for v in got.values.values()):
        first = next(iter(got.errors.values()))
        where = f"device {device} on bus {dev.bus}"
        if first == "timeout":
            raise BusTimeout(f"{where}: no answer")
        raise BusError(f"{where}: {first}")
    got.judge(points)
    return got


def _why(exc: EdgeAgentError) -> str:
    if isinstance(exc, BusTimeout):
        return "timeout"
    return f"{type(exc).__name__}: {exc}"


async def _read_at(bus_cfg: SerialBus, points: Sequence[AtPoint]) -> DirectRead:
    from edge_agent.bus.at import AtClient
    from edge_agent.bus.at_points import read_point

    client = AtClient.from_config(bus_cfg)
    out = DirectRead()
    try:
        for p in points:
            try:
                out.values[p.name] = await read_point(client, p, timeout_s=bus_cfg.timeout_max_s)
            except (AtError, CodecError) as exc:  # the module answered: only this point
                out.values[p.name] = None
                out.errors[p.name] = _why(exc)
            except BusClosed:  # the port does not open (missing, not permitted, in use)
                raise
            except BusError as exc:  # no answer: the rest will not do better
                for q in points:
                    if q.name not in out.values:
                        out.values[q.name] = None
                        out.errors[q.name] = _why(exc)
                break
    finally:
        await client.close()
    return out


async def _read_modbus(bus_cfg: Any, unit: int, points: tuple[ModbusPoint, ...],
                       max_gap: int) -> DirectRead:
    from edge_agent.bus.serial_line import SerialRtuBus
    from edge_agent.bus.tcp_endpoint import TcpEndpoint

    if isinstance(bus_cfg, SerialBus):
        bus: SerialRtuBus | TcpEndpoint = SerialRtuBus(bus_cfg)
    elif isinstance(bus_cfg, TcpBus):
        bus = TcpEndpoint(bus_cfg)
    else:
        raise CommandRefused("unsupported", f"bus type {type(bus_cfg).__name__}")
    timeout = bus_cfg.timeout_max_s
    out = DirectRead()
    try:
        for req in plan(points, max_gap=max_gap):
            try:
                regs = await bus.read(unit, req.table, req.address, req.count, timeout_s=timeout)
            except BusClosed:  # the line does not open: no request will do better
                raise
            except BusError as exc:
                for p in req.points:
                    out.values[p.name] = None
                    out.errors[p.name] = _why(exc)
                continue
            for p in req.points:
                off = p.address - req.address
                try:
                    out.values[p.name] = decode(p, regs[off : off + p.count])
                except CodecError as exc:
                    out.values[p.name] = None
                    out.errors[p.name] = f"decode: {exc}"
    finally:
        await bus.close()
    return out


def load(config_path: Path) -> AgentConfig:
    from edge_agent.config.load import load_config

    return load_config(config_path)
