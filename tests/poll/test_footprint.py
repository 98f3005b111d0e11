"""Memory: what a Poller holds for each device of a district (issue #15: 1,000 devices).

Measured with tracemalloc over building the Poller and its jobs, for 200 devices of the two pole
profiles on 100 Modbus TCP endpoints at 60 s (the idle district's shape); the profiles' shared
plans and decodings are built first, as a thousand devices share them. 2,222 bytes a device
before the issue #15 memory round (instance dicts, a slot object and a job table entry per job,
two bound methods, two backoffs, a throw-away request list per group), ~1,700 after, ~950
after the fifth session's (a scheduler is its own queue, one flat job list, shared outlets, the
device its own lock), ~870 after the sixth (the device's record, which the report filter adopts,
is made with the device). ``test_a_polled_district_...`` measures the district once every device
was polled (the device's record filled: its last values and the report filter's) and every bus
parked: ~1,720 bytes a device before the sixth session, ~1,615 after (the EDF queues' small
tie-breakers, one list a device for its values and the filter's, no filter table of devices).
"""

from __future__ import annotations

import asyncio
import gc
import random
import tracemalloc

import pytest

from edge_agent.config.model import AgentConfig, DeviceConfig, TcpBus
from edge_agent.errors import ContractError
from edge_agent.platform.clock import ClockProbe
from edge_agent.poll import device_poll
from edge_agent.poll.at_poll import AtDevicePoller
from edge_agent.poll.device_plan import DevicePlan
from edge_agent.poll.device_poll import DevicePoller
from edge_agent.poll.engine import Poller
from edge_agent.profiles.model import Table
from edge_agent.readings import Reading
from tests.poll.fakes import FakeBus, make_config, profile


def _config(n_poles: int) -> AgentConfig:
    lamp, env = profile("street_lamp"), profile("pole_environment")
    buses = [TcpBus(f"pole-{i:03d}", "127.0.0.1", 1502 + i) for i in range(n_poles)]
    devices = [DeviceConfig(f"pole-{i:03d}-{kind}", p.name, f"pole-{i:03d}", unit_id=unit,
                            interval_s=60.0)
               for i in range(n_poles) for kind, p, unit in (("lamp", lamp, 1), ("env", env, 2))]
    return make_config(buses, devices, [lamp, env])


def _no_history() -> None:
    """Empty the module cache a new poller's requests add to (their decodings, by request): a
    cache the process's earlier tests filled to the brink of a resize would charge the district
    with a table of thousands of entries (+365 bytes a device: this test's one flake, which
    depended on the tests run before it, not on the machine's load)."""
    device_poll._BY_REQUEST.clear()


def _district(n_poles: int) -> tuple[Poller, int]:
    _no_history()
    cfg = _config(n_poles)
    devices = cfg.devices
    owners = {b: FakeBus(b) for b in cfg.buses}
    clock = ClockProbe(synced=lambda: False, boot_id="boot-1")

    def sink(_r: Reading) -> None:
        pass

    Poller(cfg, owners, sink, clock=clock)._make_jobs(0.0)  # profiles' shared tables, caches
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        poller = Poller(cfg, owners, sink, clock=clock)
        poller._make_jobs(0.0)
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    return poller, used // len(devices)


def test_a_district_device_costs_the_poller_under_900_bytes() -> None:
    poller, per_device = _district(100)
    assert len(poller.devices) == 200 and len(poller.jobs) == 200
    assert per_device < 900, per_device  # 1,277 before the fifth session, ~867 after the sixth


class _Registers(FakeBus):
    """Answers at once with values in the profiles' plausible ranges, new ones each read."""

    def __init__(self, name: str, rnd: random.Random) -> None:
        super().__init__(name, latency_s=0.0)
        self.rnd = rnd

    async def read(self, unit: int, table: Table, address: int, count: int, *,
                   timeout_s: float) -> list[int]:
        return [int(self.rnd.random() < 0.1) if table.is_bits else self.rnd.randrange(300, 800)
                for _ in range(count)]


def test_a_polled_district_with_its_buses_parked_costs_under_1700_bytes_a_device() -> None:
    """What the idle district holds between polls (issue #15's load, every device at 60 s):
    the devices, their jobs, the report filter's and the last values' lists once every device
    was polled twice (values, times, health), the schedulers started and parked."""
    cfg = _config(100)
    rnd = random.Random(7)
    owners = {b: _Registers(b, rnd) for b in cfg.buses}
    clock = ClockProbe(synced=lambda: False, boot_id="boot-1")

    def sink_many(_r: list[Reading]) -> None:
        pass

    async def main() -> int:
        _no_history()
        warm = Poller(cfg, owners, lambda r: None, clock=clock, sink_many=sink_many)
        warm._make_jobs(0.0)
        for job in warm.jobs[:4]:  # the profiles' shared plans, decodings, caches
            await warm._run_job(job)
        del warm, job
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            poller = Poller(cfg, owners, lambda r: None, clock=clock, sink_many=sink_many,
                            rng=random.Random(3))
            poller._make_jobs(asyncio.get_running_loop().time() + 30.0)  # not due for 30 s
            for _ in range(2):
                for job in poller.jobs:
                    await poller._run_job(job)
            del job
            for s in poller.schedulers.values():
                s.start()
            await asyncio.sleep(0.01)
            assert sum(s.workers_running for s in poller.schedulers.values()) == 0
            gc.collect()
            used = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        await asyncio.gather(*(s.close() for s in poller.schedulers.values()))
        return used // len(poller.devices)

    per_device = asyncio.run(main())
    # 2,208 before the fifth session, ~1,720 before the sixth, 1,606-1,621 after
    assert per_device < 1700, per_device


def test_the_devices_of_a_profile_share_one_plan_until_one_learns() -> None:
    """A thousand devices of two profiles hold two plans (and one set of outlets), not a
    thousand: a device gets a plan of its own when asked for one it may change (``plan``)."""
    poller, _ = _district(3)
    lamps = [dp for dp in poller.devices.values() if dp.device.name.endswith("lamp")]
    envs = [dp for dp in poller.devices.values() if dp.device.name.endswith("env")]
    for kind in (lamps, envs):
        assert len({id(dp.current_plan) for dp in kind}) == 1
    assert lamps[0].current_plan is not envs[0].current_plan
    assert len({id(dp._out) for dp in poller.devices.values()}) == 1
    own = lamps[0].plan
    assert own is lamps[0].current_plan is lamps[0].plan and own is not lamps[1].current_plan
    assert own.groups == lamps[1].current_plan.groups and own.known is None
    own.learnt  # noqa: B018  # its own map: the other lamps' plan learns nothing
    assert lamps[1].current_plan.known is None
    with pytest.raises(ContractError):
        lamps[1].current_plan.learnt  # noqa: B018


def test_pollers_and_plans_hold_no_instance_dict() -> None:
    for cls in (DevicePoller, AtDevicePoller, DevicePlan):
        assert "__dict__" not in dir(cls), cls
    poller, _ = _district(2)
    dp = next(iter(poller.devices.values()))
    assert not hasattr(dp, "__dict__") and not hasattr(dp.plan, "__dict__")
