"""Stopping the Poller (what a reload, a bundle applied in place or a rollback does) at any moment
ends it: real bus owners from a config (an NB-IoT module on a pty, a Modbus TCP endpoint, an
RS-485 line on a pty), stopped at random moments while the loop is busy as a loaded gateway's is,
so the stop often lands while a serial port opens, an endpoint connects or an answer arrives.

Seen once in the sandbox (tests/sandbox/test_rollout_in_unit.py): a bundle applied in place logged
``rollout_applying`` and nothing more -- the old poller's task never ended, so the reload hung and
the gateway polled nothing. The cause: ``asyncio.wait_for`` (Python 3.11) drops a cancellation
that comes while the awaited answer has just arrived (the AT client's command) or the connect has
just completed (the TCP endpoint); the cancelled poll job ran on, and the scheduler's close waited
for it for ever. Every wait here is bounded: a hang is a failure naming the round."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator

import pytest

from edge_agent.config.model import BusKind, DeviceConfig, SerialBus, TcpBus
from edge_agent.platform.clock import ClockProbe
from edge_agent.poll.engine import Poller
from edge_agent.service.buses import make_buses
from edge_agent.service.poller_stop import close_buses
from simulators.clock import SimClock
from simulators.devices.catalog import make_device
from simulators.devices.nbiot import NbiotState
from simulators.transports.at_modem import AtModem
from simulators.transports.tcp import TcpEndpoint as SimEndpoint
from tests.poll.conftest import LineFactory, sim_devices
from tests.poll.fakes import make_config, profile

ROUNDS = 40
LOAD_S = 0.002  # the loop is busy this long in every iteration (a loaded gateway's loop)


@pytest.fixture
def modem() -> Iterator[AtModem]:
    m = AtModem(NbiotState(name="nb1", seed=4), slow_s=0.01)
    m.start()
    yield m
    m.stop()


def _load(loop: asyncio.AbstractEventLoop, until: list[float]) -> None:
    if time.monotonic() < until[0]:
        time.sleep(LOAD_S)
        loop.call_soon(_load, loop, until)


@pytest.mark.timeout(120)
def test_a_stop_at_any_moment_ends_the_poller(modem: AtModem, rtu_line: LineFactory) -> None:
    meter, lamp = profile("water_meter"), profile("street_lamp")
    line = rtu_line(sim_devices(meter, [1], "m"))
    rng = random.Random(7)

    async def main() -> None:
        ep = SimEndpoint("pole", [make_device("lamp", 1, lamp, SimClock())])
        await ep.start()
        cfg = make_config(
            [SerialBus("nbiot", modem.path, baud=115200, timeout_max_s=0.5, kind=BusKind.AT),
             TcpBus("pole", "127.0.0.1", ep.port, timeout_max_s=0.5),
             SerialBus("water", line.path, baud=9600, timeout_max_s=0.3)],
            [DeviceConfig("nb1", "nbiot_bc95", "nbiot", interval_s=0.0),
             DeviceConfig("lamp", "street_lamp", "pole", unit_id=1, interval_s=0.05),
             DeviceConfig("m1", "water_meter", "water", unit_id=1, interval_s=0.05)],
            [profile("nbiot_bc95"), lamp, meter])
        loop = asyncio.get_running_loop()
        stuck: list[int] = []
        try:
            for i in range(ROUNDS):
                buses = make_buses(cfg)  # new owners: the port opens, the endpoint connects
                poller = Poller(cfg, buses, lambda r: None, clock=ClockProbe(boot_id="b"))
                task = asyncio.create_task(poller.run())
                until = [time.monotonic() + 30]
                loop.call_soon(_load, loop, until)
                try:
                    await asyncio.sleep(rng.uniform(0.0, 0.15))
                    poller.stop()
                    await asyncio.wait((task,), timeout=3.0)
                    if not task.done():
                        stuck.append(i)
                        task.cancel()  # the stuck job's next await takes this one
                        await asyncio.wait((task,), timeout=3.0)
                finally:
                    until[0] = 0.0
                    assert await close_buses(buses, 3.0) == []
                if stuck:
                    break
            assert not stuck, f"round {stuck[0]}: the poller's task did not end after stop()"
        finally:
            await ep.stop()

    asyncio.run(main())
