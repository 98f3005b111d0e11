"""Bus owners for a config: one per [[buses]] entry."""

from __future__ import annotations

import contextlib
from typing import Any

from edge_agent.bus.at import AtClient
from edge_agent.bus.serial_line import SerialRtuBus
from edge_agent.bus.tcp_endpoint import TcpEndpoint
from edge_agent.config.model import AgentConfig, BusKind, TcpBus
from edge_agent.retry import RetryPolicy

BusOwner = SerialRtuBus | TcpEndpoint | AtClient


def make_buses(cfg: AgentConfig, retry: RetryPolicy | None = None) -> dict[str, Any]:
    owners: dict[str, Any] = {}
    for name, b in cfg.buses.items():
        if isinstance(b, TcpBus):
            owners[name] = TcpEndpoint(b, retry=retry)
        elif b.kind is BusKind.AT:
            owners[name] = AtClient.from_config(b)
        else:
            owners[name] = SerialRtuBus(b, retry=retry)
    return owners


async def close_buses(owners: dict[str, Any]) -> None:
    for owner in owners.values():
        with contextlib.suppress(Exception):
            await owner.close()
