"""The shipped profiles' plausible ranges agree with the simulated devices: a whole simulated week
of normal values stays inside, and the OUT_OF_RANGE fault puts every simulated physical quantity
outside (what the poller then publishes as ``out_of_range``)."""

from __future__ import annotations

import pytest

from edge_agent.poll.quality import judge
from edge_agent.profiles import codec
from edge_agent.profiles.model import ModbusPoint, Profile, plausible_range
from edge_agent.readings import Quality, Value
from simulators.clock import SimClock
from simulators.devices.profile_device import ProfileDevice
from simulators.faults import DeviceFault

from .conftest import DeviceMaker

MODBUS = ("street_lamp", "pole_environment", "water_meter", "manhole_cover", "pipe_pressure")
# the values named in the issue that were published as good before profiles declared ranges
ISSUE: dict[str, dict[str, float]] = {
    "street_lamp": {"dimming": 200, "tilt_angle": 90.0},
    "manhole_cover": {"battery": 200},
    "water_meter": {"battery": 200, "totalizer": 4294967.295},
}


def decoded(dev: ProfileDevice, p: ModbusPoint) -> Value:
    return codec.decode(p, dev.read(p.table, p.address, p.count))


def test_every_simulated_quantity_has_a_plausible_range(make: DeviceMaker,
                                                        profiles: dict[str, Profile]) -> None:
    checked = 0
    for name in MODBUS:
        for point in make(name).model.ranges:
            assert plausible_range(profiles[name].point(point)) is not None, (name, point)
            checked += 1
    assert checked >= 20


@pytest.mark.parametrize("name", MODBUS)
def test_a_simulated_week_is_plausible_and_the_fault_is_not(
        name: str, make: DeviceMaker, clock: SimClock, profiles: dict[str, Profile]) -> None:
    dev = make(name)
    ranged = [p for p in profiles[name].modbus_points if plausible_range(p) is not None]
    for _ in range(7 * 24 * 4):  # every 15 simulated minutes for a week
        clock.advance(900)
        for p in ranged:
            v = decoded(dev, p)
            assert judge(v, plausible_range(p)) == (Quality.GOOD, ""), (p.name, v, clock.now())
    dev.faults.kind = DeviceFault.OUT_OF_RANGE
    bad = {p.name: decoded(dev, p) for p in ranged if p.name in dev.model.ranges}
    assert bad
    for point, v in bad.items():
        q, reason = judge(v, plausible_range(profiles[name].point(point)))
        assert (q, reason) == (Quality.OUT_OF_RANGE, "above"), (point, v)
    for point, v in ISSUE.get(name, {}).items():
        assert bad[point] == pytest.approx(v)
