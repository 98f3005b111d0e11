"""Bus owners for a config: one per [[buses]] entry (closed by ``poller_stop.close_buses``).

The serial owners (RTU line, AT module) and pyserial are imported only for a config that has
such a bus: a gateway of Modbus TCP endpoints never loads them (issue #15's memory)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edge_agent.bus.tcp_endpoint import TcpEndpoint
from edge_agent.config.model import AgentConfig, BusKind, TcpBus
from edge_agent.retry import RetryPolicy

if TYPE_CHECKING:
    from edge_agent.bus.at import AtClient
    from edge_agent.bus.serial_line import SerialRtuBus

    BusOwner = SerialRtuBus | TcpEndpoint | AtClient


def make_buses(cfg: AgentConfig, retry: RetryPolicy | None = None) -> dict[str, Any]:
    owners: dict[str, Any] = {}
    for name, b in cfg.buses.items():
        if isinstance(b, TcpBus):
            owners[name] = TcpEndpoint(b, retry=retry)
        elif b.kind is BusKind.AT:
            from edge_agent.bus.at import AtClient

            owners[name] = AtClient.from_config(b)
        else:
            from edge_agent.bus.serial_line import SerialRtuBus

            owners[name] = SerialRtuBus(b, retry=retry)
    return owners

