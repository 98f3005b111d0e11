"""Behaviour models through their register image: the physics the agent will see on the wire."""

from __future__ import annotations

import pytest

from edge_agent.errors import ModbusException
from edge_agent.profiles import codec
from edge_agent.profiles.model import ModbusPoint, Table
from simulators.clock import SimClock
from simulators.devices.nbiot import HOME, SEARCHING, NbiotState, _luhn_digit
from simulators.devices.profile_device import ProfileDevice
from simulators.faults import DeviceFault

from .conftest import DeviceMaker


def value(dev: ProfileDevice, point: str) -> object:
    """Read ``point`` over the device's register interface and decode it with the codec."""
    p = dev.profile.point(point)
    assert isinstance(p, ModbusPoint)
    return codec.decode(p, dev.read(p.table, p.address, p.count))


def num(dev: ProfileDevice, point: str) -> float:
    v = value(dev, point)
    assert isinstance(v, int | float)
    return float(v)


def test_lamp_dimming_50_halves_power_and_current(make: DeviceMaker, clock: SimClock) -> None:
    lamp = make("street_lamp")
    clock.advance(60)
    assert value(lamp, "lamp_on") is True  # 19:00 in auto mode: on at 100 %
    full, full_a = num(lamp, "power"), num(lamp, "current")
    assert full > 50
    lamp.write(Table.HOLDING, 0, [50])
    assert num(lamp, "dimming") == 50
    assert num(lamp, "power") == pytest.approx(full / 2, abs=0.1)
    assert num(lamp, "current") == pytest.approx(full_a / 2, abs=0.002)
    assert num(lamp, "current") == pytest.approx(num(lamp, "power") / num(lamp, "voltage"),
                                                 abs=0.002)
    lamp.write(Table.COIL, 0, [0])
    assert num(lamp, "power") == 0.0


def test_lamp_energy_integrates_power(make: DeviceMaker, clock: SimClock) -> None:
    lamp = make("street_lamp")
    clock.advance(10)
    e0 = num(lamp, "energy")
    power = num(lamp, "power")
    clock.advance(3600)
    assert num(lamp, "energy") - e0 == pytest.approx(power / 1000.0, abs=0.011)
    lamp.reboot()
    assert num(lamp, "energy") == 0.0  # the driver's counter is volatile


def test_lamp_auto_programme_switches_off_at_dawn(make: DeviceMaker, clock: SimClock) -> None:
    lamp = make("street_lamp")
    clock.advance(6 * 3600)  # 01:00: dimmed to 50 % after midnight
    assert value(lamp, "lamp_on") is True and num(lamp, "dimming") == 50
    clock.advance(6 * 3600)  # 07:00
    assert value(lamp, "lamp_on") is False and num(lamp, "power") == 0.0


def test_lamp_rejects_out_of_bounds_and_read_only_writes(make: DeviceMaker) -> None:
    lamp = make("street_lamp")
    with pytest.raises(ModbusException) as exc:
        lamp.write(Table.HOLDING, 0, [101])
    assert exc.value.code == ModbusException.ILLEGAL_DATA_VALUE
    with pytest.raises(ModbusException) as exc:
        lamp.write(Table.HOLDING, 7, [1])
    assert exc.value.code == ModbusException.ILLEGAL_DATA_ADDRESS
    with pytest.raises(ModbusException):
        lamp.write(Table.INPUT, 0, [1])
    lamp.write(Table.HOLDING, 1, [1])
    assert value(lamp, "light_mode") == "manual"


def test_lamp_door_and_tilt_events_raise_alarm_bits(make: DeviceMaker, clock: SimClock) -> None:
    lamp = make("street_lamp")
    clock.advance(20)
    assert lamp.read(Table.DISCRETE, 0, 2) == [0, 0]
    lamp.model.trigger("door", 600)
    lamp.model.trigger("tilt", 600)
    clock.advance(20)
    assert lamp.read(Table.DISCRETE, 0, 2) == [1, 1]
    assert abs(num(lamp, "tilt_angle")) > 10
    clock.advance(1200)
    assert lamp.read(Table.DISCRETE, 0, 2) == [0, 0]


def test_environment_daily_cycle_and_traffic_peaks(make: DeviceMaker, clock: SimClock) -> None:
    env = make("pole_environment")
    clock.advance(9 * 3600)  # 04:00
    night_t, night_h, night_pm = num(env, "temperature"), num(env, "humidity"), num(env, "pm2_5")
    night_noise = num(env, "noise_db")
    clock.advance(4 * 3600)  # 08:00 rush hour
    assert num(env, "pm2_5") > night_pm + 10
    assert num(env, "noise_db") > night_noise + 10
    assert num(env, "pm10") >= num(env, "pm2_5")
    clock.advance(7 * 3600)  # 15:00
    assert num(env, "temperature") > night_t + 8
    assert num(env, "humidity") < night_h - 10


def test_water_totalizer_is_the_integral_of_flow(make: DeviceMaker, clock: SimClock) -> None:
    meter = make("water_meter")
    model = meter.model
    clock.advance(12 * 3600)  # to 07:00, the morning peak
    t0 = meter.snapshot()["totalizer"]
    assert isinstance(t0, float)
    integral = 0.0
    for _ in range(240):  # two hours, one model step at a time
        clock.advance(model.step_s)
        integral += num(meter, "flow_rate") * model.step_s / 3600.0
    assert integral > 0.1
    assert model.num("totalizer") - t0 == pytest.approx(integral, rel=1e-5)
    # the register carries it in litres (uint32, scale 0.001)
    assert num(meter, "totalizer") == pytest.approx(model.num("totalizer"), abs=0.0011)


def test_water_leak_alarm_when_night_flow_never_stops(make: DeviceMaker, clock: SimClock) -> None:
    leaky = make("water_meter", name="meter-01", leak_m3h=0.03)
    tight = make("water_meter", name="meter-02")
    b0 = num(tight, "battery")
    clock.advance(11 * 3600)  # 06:00 next day: one night seen
    assert value(leaky, "leak") is True
    assert value(tight, "leak") is False
    assert num(tight, "battery") <= b0


def test_water_reverse_flow_and_tamper_bits(make: DeviceMaker, clock: SimClock) -> None:
    meter = make("water_meter")
    meter.model.trigger("reverse", 300)
    meter.model.trigger("tamper", 300)
    clock.advance(60)
    status = meter.read(Table.INPUT, 6, 1)[0]
    assert status & 0b101 == 0b101  # tamper bit 0, reverse bit 2
    assert num(meter, "flow_rate") < 0
    meter.write(Table.COIL, 0, [0])  # close the valve
    clock.advance(600)
    assert num(meter, "flow_rate") == 0.0 and meter.read(Table.COIL, 0, 1) == [0]


def test_manhole_rain_raises_water_and_strict_map(make: DeviceMaker, clock: SimClock) -> None:
    dry = make("manhole_cover", name="manhole-01")
    wet = make("manhole_cover", name="manhole-02", rain_mm_h=15.0)
    l_dry, l_wet = num(dry, "water_level"), num(wet, "water_level")
    clock.advance(2 * 3600)
    assert num(wet, "water_level") > l_wet + 30
    assert num(dry, "water_level") < l_dry + 2
    with pytest.raises(ModbusException) as exc:  # max_gap = 0: unmapped reads are refused
        dry.read(Table.INPUT, 0, 20)
    assert exc.value.code == ModbusException.ILLEGAL_DATA_ADDRESS
    wet.model.trigger("open", 600)
    clock.advance(60)
    assert value(wet, "cover_open") is True and num(wet, "tilt_angle") > 45


def test_pipe_pressure_water_hammer_oscillates(make: DeviceMaker, clock: SimClock) -> None:
    pipe = make("pipe_pressure")
    clock.advance(5)
    calm = num(pipe, "pressure")
    assert 3.0 < calm < 6.0
    pipe.model.trigger("hammer")
    seen = []
    for _ in range(20):
        clock.advance(0.2)
        seen.append(num(pipe, "pressure"))
    assert max(seen) > calm + 1.0 and min(seen) < calm - 1.0
    clock.advance(60)
    assert abs(num(pipe, "pressure") - calm) < 1.0


def test_nbiot_state_registers_and_is_deterministic() -> None:
    a, b = NbiotState(name="nb", seed=3), NbiotState(name="nb", seed=3)
    assert a.imei == b.imei and len(a.imei) == 15 and a.imei[-1] == _luhn_digit(a.imei[:-1])
    assert a.reg_state == SEARCHING and a.csq == 99
    for s in (a, b):
        s.tick(600.0)
    assert a.reg_state == HOME and 0 <= a.csq <= 31
    assert (a.rsrp, a.sinr, a.cell_id, a.csq) == (b.rsrp, b.sinr, b.cell_id, b.csq)
    assert a.coverage_class == (0 if a.rsrp > -105 else 1 if a.rsrp > -115 else 2)
    a.reboot()
    assert a.reg_state == SEARCHING and a.csq == 99
    assert NbiotState(name="nb", seed=4).imei != a.imei


def test_same_seed_same_registers_different_seed_differs(make: DeviceMaker,
                                                         clock: SimClock) -> None:
    twins = [make("water_meter", name="m", seed=5), make("water_meter", name="m", seed=5)]
    other = make("water_meter", name="m", seed=6)
    # different read patterns must not change the values at a given simulated time
    for _ in range(30):
        clock.advance(97)
        twins[0].read(Table.INPUT, 0, 7)
    images = [d.read(Table.INPUT, 0, 16) for d in (*twins, other)]
    assert images[0] == images[1]
    assert images[0] != images[2]


def test_device_faults_stuck_out_of_range_exception(make: DeviceMaker, clock: SimClock) -> None:
    env = make("pole_environment")
    clock.advance(60)
    env.faults.kind = DeviceFault.STUCK
    frozen = env.read(Table.HOLDING, 0, 9)
    clock.advance(4 * 3600)
    assert env.read(Table.HOLDING, 0, 9) == frozen
    env.faults.kind = DeviceFault.OUT_OF_RANGE
    assert num(env, "humidity") > 100.0 and num(env, "temperature") > 60.0
    env.faults.kind = DeviceFault.EXCEPTION
    env.faults.exception_code = 4
    with pytest.raises(ModbusException) as exc:
        env.read(Table.HOLDING, 0, 1)
    assert exc.value.code == 4
    env.faults.clear()
    assert env.read(Table.HOLDING, 0, 9) != frozen
    assert 0 <= num(env, "humidity") <= 100
