"""A Modbus TCP gateway answering 0x0B ("gateway target failed to respond") for a unit behind it:
the gateway is alive, the unit is not -- it counts as failing (and is quarantined), not as up."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from edge_agent.bus.tcp_endpoint import TcpEndpoint
from edge_agent.config.model import DeviceConfig, TcpBus
from edge_agent.platform.clock import ClockProbe
from edge_agent.poll.engine import Poller
from edge_agent.readings import Reading
from simulators.clock import SimClock
from simulators.devices.catalog import make_device
from simulators.transports.tcp import TcpEndpoint as SimEndpoint
from tests.poll.fakes import make_config, profile


@pytest.mark.timeout(30)
def test_a_unit_the_gateway_cannot_reach_is_failing_not_alive() -> None:
    lamp = profile("street_lamp")
    out: list[Reading] = []
    status: dict[str, Any] = {}

    async def main() -> None:
        ep = SimEndpoint("pole", [make_device("lamp", 1, lamp, SimClock())])
        await ep.start()
        bus = TcpBus("pole", "127.0.0.1", ep.port, timeout_max_s=0.5)
        devices = [DeviceConfig("lamp", lamp.name, "pole", unit_id=1, interval_s=0.2),
                   DeviceConfig("ghost", lamp.name, "pole", unit_id=9, interval_s=0.2)]
        owner = TcpEndpoint(bus)
        poller = Poller(make_config([bus], devices, [lamp]), {"pole": owner}, out.append,
                        clock=ClockProbe(boot_id="b"))
        task = asyncio.create_task(poller.run())
        try:
            await asyncio.sleep(2.0)
            status.update(poller.status())
        finally:
            poller.stop()
            await task
            await owner.close()
            await ep.stop()

    asyncio.run(main())
    ghost, real = status["ghost"], status["lamp"]
    assert ghost["consecutive_failures"] and not ghost["last_good_ns"], ghost
    assert ghost["last_error"] and "11" in str(ghost["last_error"]), ghost
    assert real["consecutive_failures"] == 0 and real["last_good_ns"], real
