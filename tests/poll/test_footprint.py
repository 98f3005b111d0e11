"""Memory: what a Poller holds for each device of a district (issue #15: 1,000 devices).

Measured with tracemalloc over building the Poller and its jobs, for 200 devices of the two pole
profiles on 100 Modbus TCP endpoints at 60 s (the idle district's shape); the profiles' shared
plans and decodings are built first, as a thousand devices share them. 2,222 bytes a device
before the issue #15 memory round (instance dicts, a slot object and a job table entry per job,
two bound methods, two backoffs, a throw-away request list per group), ~1,700 after.
"""

from __future__ import annotations

import gc
import tracemalloc

from edge_agent.config.model import DeviceConfig, TcpBus
from edge_agent.platform.clock import ClockProbe
from edge_agent.poll.at_poll import AtDevicePoller
from edge_agent.poll.device_plan import DevicePlan
from edge_agent.poll.device_poll import DevicePoller
from edge_agent.poll.engine import Poller
from edge_agent.readings import Reading
from tests.poll.fakes import FakeBus, make_config, profile


def _district(n_poles: int) -> tuple[Poller, int]:
    lamp, env = profile("street_lamp"), profile("pole_environment")
    buses = [TcpBus(f"pole-{i:03d}", "127.0.0.1", 1502 + i) for i in range(n_poles)]
    devices = [DeviceConfig(f"pole-{i:03d}-{kind}", p.name, f"pole-{i:03d}", unit_id=unit,
                            interval_s=60.0)
               for i in range(n_poles) for kind, p, unit in (("lamp", lamp, 1), ("env", env, 2))]
    cfg = make_config(buses, devices, [lamp, env])
    owners = {b.name: FakeBus(b.name) for b in buses}
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


def test_a_district_device_costs_the_poller_under_1850_bytes() -> None:
    poller, per_device = _district(100)
    assert len(poller.devices) == 200 and len(poller.jobs) == 200
    assert per_device < 1850, per_device


def test_pollers_and_plans_hold_no_instance_dict() -> None:
    for cls in (DevicePoller, AtDevicePoller, DevicePlan):
        assert "__dict__" not in dir(cls), cls
    poller, _ = _district(2)
    dp = next(iter(poller.devices.values()))
    assert not hasattr(dp, "__dict__") and not hasattr(dp.plan, "__dict__")
