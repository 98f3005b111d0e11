"""The ``modbus`` control op: raw register reads and writes (``edge-agent modbus``, ``scan``)
through the daemon's own bus owner, serialised with the polls, so that commissioning while the
daemon runs never puts a second master on a line.

A bus is named by its config name or by its port (``/dev/ttyUSB0``, ``host:port``). A write is
not bounded by any profile (that is what it is for) and logged as an audit line. ``probe``
(scan): a unit that no configured device uses costs no late-answer hold after a timeout, so a
scan of absent units keeps the line moving.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from edge_agent.bus.raw import table_of, transact
from edge_agent.config.model import AgentConfig, BusKind, SerialBus, TcpBus
from edge_agent.errors import CommandRefused

if TYPE_CHECKING:
    from edge_agent.service.daemon import Agent

log = logging.getLogger("edge_agent.commissioning")


def _same_port(a: str, b: str) -> bool:
    return a == b or os.path.realpath(a) == os.path.realpath(b)


def find_bus(cfg: AgentConfig, name: str) -> str:
    """The config name of the bus ``name`` names (its name, serial port or host:port)."""
    if name in cfg.buses:
        return name
    for b in cfg.buses.values():
        if isinstance(b, SerialBus) and _same_port(b.port, name):
            return b.name
        if isinstance(b, TcpBus) and name in (f"{b.host}:{b.port}", b.host):
            return b.name
    raise CommandRefused("unknown_bus", name)


async def raw_modbus(agent: Agent, bus: str, unit: int, table: str, address: int,
                     count: int | None = None, values: Sequence[int] | None = None,
                     timeout: float | None = None, probe: bool = False) -> dict[str, Any]:
    poller = agent.poller
    if poller is None:
        raise CommandRefused("not_running", "its poller is not running")
    name = find_bus(agent.cfg, bus)
    bus_cfg = agent.cfg.buses[name]
    if bus_cfg.kind is BusKind.AT:
        raise CommandRefused("unsupported", f"bus {name} is an AT-command line, not Modbus")
    owner = agent.buses[name]
    tbl = table_of(table)
    n = len(values) if values is not None else (count or 1)
    cap = bus_cfg.timeout_max_s
    timeout_s = min(cap, max(timeout, owner.min_timeout_s(tbl, n))) if timeout else cap
    if probe and values is None:
        used = {d.unit_id for d in agent.cfg.devices if d.bus == name}
        late = getattr(owner, "late", None)
        if late is not None and unit not in used:
            late.silent.add(unit)  # nobody polls it: its timeouts hold nothing
    sched = poller.schedulers.get(name)
    async with sched.slots if sched is not None else contextlib.nullcontext():
        res = await transact(owner, tbl, unit, address, n, values, timeout_s)
    if values is not None:
        log.warning("modbus_write_audit bus=%s unit=%d table=%s address=%d values=%s "
                    "exception=%s", name, unit, tbl, address, list(values), res.exception)
    return {"bus": name, **res.as_dict()}
