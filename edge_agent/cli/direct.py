"""Reading a device straight from its bus while the daemon is stopped (bench work).

Never used while the daemon runs: two masters on one RS-485 line corrupt each other's frames.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from edge_agent.config.checks import effective_max_gap
from edge_agent.config.load import load_config
from edge_agent.config.model import SerialBus
from edge_agent.errors import CommandRefused, EdgeAgentError
from edge_agent.profiles.codec import decode
from edge_agent.profiles.model import ModbusPoint, Protocol
from edge_agent.profiles.planner import plan
from edge_agent.readings import Value


def direct_read(config_path: Path, device: str, point: str | None) -> dict[str, Value]:
    cfg = load_config(config_path)
    dev = next((d for d in cfg.devices if d.name == device), None)
    if dev is None:
        raise CommandRefused("unknown_device", device)
    profile = cfg.profiles[dev.profile]
    if profile.protocol is Protocol.AT:
        raise CommandRefused("unsupported", "direct reads of AT modules: use the daemon")
    points = profile.modbus_points
    if point is not None:
        points = tuple(p for p in points if p.name == point)
        if not points:
            raise CommandRefused("unknown_point", f"{device}.{point}")
    bus_cfg = cfg.buses[dev.bus]
    return asyncio.run(_read(bus_cfg, dev.unit_id, points, effective_max_gap(dev, profile)))


async def _read(bus_cfg: object, unit: int, points: tuple[ModbusPoint, ...],
                max_gap: int) -> dict[str, Value]:
    from edge_agent.bus.serial_line import SerialRtuBus
    from edge_agent.bus.tcp_endpoint import TcpEndpoint
    from edge_agent.config.model import TcpBus

    if isinstance(bus_cfg, SerialBus):
        bus: SerialRtuBus | TcpEndpoint = SerialRtuBus(bus_cfg)
    elif isinstance(bus_cfg, TcpBus):
        bus = TcpEndpoint(bus_cfg)
    else:
        raise CommandRefused("unsupported", f"bus type {type(bus_cfg).__name__}")
    timeout = bus_cfg.timeout_max_s
    values: dict[str, Value] = {}
    try:
        for req in plan(points, max_gap=max_gap):
            try:
                regs = await bus.read(unit, req.table, req.address, req.count, timeout_s=timeout)
            except EdgeAgentError as exc:
                for p in req.points:
                    values[p.name] = f"error: {type(exc).__name__}: {exc}"
                continue
            for p in req.points:
                off = p.address - req.address
                try:
                    values[p.name] = decode(p, regs[off : off + p.count])
                except EdgeAgentError as exc:
                    values[p.name] = f"error: {exc}"
    finally:
        await bus.close()
    return values
