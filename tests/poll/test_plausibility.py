"""Implausible values through the real poll path: simulated devices behind a real Modbus TCP
endpoint (pymodbus), the Poller with the shipped profiles, the fault switched at run time. What the
poller hands on is ``out_of_range`` with the value the device said, never ``good``, and it stays so
through the signed wire format."""

from __future__ import annotations

import asyncio

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.bus.at import AtClient
from edge_agent.bus.tcp_endpoint import TcpEndpoint
from edge_agent.config.model import BusKind, DeviceConfig, SerialBus, TcpBus
from edge_agent.platform.clock import ClockProbe
from edge_agent.poll.engine import Poller
from edge_agent.poll.quality import judge
from edge_agent.poll.report import ReportFilter
from edge_agent.profiles import codec
from edge_agent.profiles.model import (
    DataType,
    Deadband,
    ModbusPoint,
    Reporting,
    Table,
    plausible_range,
)
from edge_agent.readings import Quality, Reading
from edge_agent.trust.batch import BatchSigner, ChainHead, decode_payload
from edge_agent.trust.cose import verify1
from edge_agent.trust.keys import kid_of
from simulators.clock import SimClock
from simulators.devices.catalog import make_device
from simulators.devices.nbiot import NbiotState
from simulators.faults import DeviceFault
from simulators.transports.at_modem import AtModem
from simulators.transports.tcp import TcpEndpoint as SimEndpoint
from tests.poll.fakes import make_config, profile


@pytest.mark.timeout(30)
def test_fault_switched_at_run_time_is_published_out_of_range() -> None:
    lamp_p, meter_p = profile("street_lamp"), profile("water_meter")
    clock = SimClock()
    out: list[Reading] = []
    marks: dict[str, int] = {}

    async def main() -> None:
        lamp = make_device("lamp1", 1, lamp_p, clock)
        meter = make_device("meter1", 2, meter_p, clock)
        ep = SimEndpoint("cab", [lamp, meter])
        await ep.start()
        bus = TcpBus("cab", "127.0.0.1", ep.port, concurrency=2, timeout_max_s=1.0)
        owner = TcpEndpoint(bus)
        devices = [DeviceConfig("lamp1", "street_lamp", "cab", unit_id=1, interval_s=0.1),
                   DeviceConfig("meter1", "water_meter", "cab", unit_id=2, interval_s=0.1)]
        poller = Poller(make_config([bus], devices, [lamp_p, meter_p]), {"cab": owner},
                        out.append, clock=ClockProbe(boot_id="b"))
        task = asyncio.create_task(poller.run())
        try:
            await asyncio.sleep(0.8)
            marks["fault"] = len(out)
            for dev in (lamp, meter):
                dev.faults.kind = DeviceFault.OUT_OF_RANGE
            await asyncio.sleep(0.8)
            marks["clear"] = len(out)
            for dev in (lamp, meter):
                dev.faults.clear()
            await asyncio.sleep(0.8)
        finally:
            poller.stop()
            await task
            await owner.close()
            await ep.stop()

    asyncio.run(main())
    before, during, after = (out[:marks["fault"]], out[marks["fault"]:marks["clear"]],
                             out[marks["clear"]:])
    assert before and all(r.quality is Quality.GOOD for r in before), before
    implausible = {(r.device, r.point): r for r in during if r.quality is Quality.OUT_OF_RANGE}
    # the values of the issue: dimming 200 %, tilt 90°, battery 200 %, totalizer 0xFFFFFFFF
    for key, value in {("lamp1", "dimming"): 200, ("lamp1", "tilt_angle"): 90.0,
                       ("meter1", "battery"): 200,
                       ("meter1", "totalizer"): 4294967.295}.items():
        r = implausible[key]
        assert r.value == pytest.approx(value) and r.reason == "above", r
    assert {p for _, p in implausible} >= {"voltage", "current", "power", "cabinet_temp",
                                           "flow_rate"}
    # nothing implausible went out as good while the fault was on
    for r in during:
        point = (lamp_p if r.device == "lamp1" else meter_p).point(r.point)
        rng = plausible_range(point)
        if r.quality is Quality.GOOD and rng is not None:
            assert isinstance(r.value, int | float) and rng[0] <= r.value <= rng[1], r
    # fault cleared: every implausible point reports good again at once (a quality change is a
    # change, whatever the deadband)
    recovered = {(r.device, r.point) for r in after if r.quality is Quality.GOOD}
    assert set(implausible) <= recovered
    # through the signed wire format, the quality and the value survive
    gw_key = Ed25519PrivateKey.generate()
    signed = BatchSigner(gw_key, "gw", "b").sign_readings(ChainHead.genesis(),
                                                       list(implausible.values()),
                                                       created_ns=1, clock_synced=True)
    pub = gw_key.public_key()
    back = decode_payload(verify1(signed.cose, {kid_of(pub): pub})[1])
    assert [(r.quality, r.reason, r.value) for r in back.readings] == \
        [(r.quality, r.reason, r.value) for r in implausible.values()]


@pytest.mark.timeout(30)
def test_at_module_reporting_an_impossible_signal_is_out_of_range() -> None:
    """An NB-IoT module (simulated, on a pty) whose RSRP goes above what 3GPP can report."""
    modem = AtModem(NbiotState(name="nb1", seed=4))
    modem.start()
    bus_cfg = SerialBus("at0", modem.path, baud=9600, timeout_max_s=0.5, kind=BusKind.AT)
    cfg = make_config([bus_cfg], [DeviceConfig("nb1", "nbiot_bc95", "at0", interval_s=0.3)],
                      [profile("nbiot_bc95")])
    out: list[Reading] = []
    mark: dict[str, int] = {}

    async def main() -> None:
        client = AtClient(modem.path, 9600, name="at0")
        poller = Poller(cfg, {"at0": client}, out.append, clock=ClockProbe(boot_id="b"))
        task = asyncio.create_task(poller.run())
        try:
            await asyncio.sleep(1.2)
            mark["n"] = len(out)
            modem.state.rsrp = modem.state.mean_rsrp = -20.0  # the module's firmware goes wrong
            await asyncio.sleep(1.5)
        finally:
            poller.stop()
            await task
            await client.close()

    try:
        asyncio.run(main())
    finally:
        modem.stop()
    rsrp = [r for r in out if r.point == "rsrp"]
    assert rsrp and rsrp[0].quality is Quality.GOOD
    assert isinstance(rsrp[0].value, float) and -140 <= rsrp[0].value <= -44
    wrong = [r for r in out[mark["n"]:] if r.point == "rsrp" and r.quality is Quality.OUT_OF_RANGE]
    assert wrong, rsrp
    assert all(r.reason == "above" and isinstance(r.value, float) and r.value > -44
               for r in wrong), wrong


def test_quality_change_is_a_change_despite_the_deadband() -> None:
    rep = Reporting(deadband=Deadband(1000.0), heartbeat_s=None)
    f = ReportFilter()

    def offer(value: float, t: int, q: Quality, reason: str = "") -> bool:
        return f.offer("d", "p", value, q, reason, t, rep)

    assert offer(99.0, 0, Quality.GOOD)
    assert offer(101.0, 1, Quality.OUT_OF_RANGE, "above")  # within the deadband, new quality
    assert not offer(150.0, 2, Quality.OUT_OF_RANGE, "above")  # deadband applies again
    assert offer(-1.0, 3, Quality.OUT_OF_RANGE, "below")  # new reason
    assert offer(50.0, 4, Quality.GOOD)


def test_plausibility_is_judged_after_scale_and_offset() -> None:
    """A uint16 in 0.1 °C with offset -40 and valid_range [-40, 85]: raw 1250 is 85.0 (ends
    included), raw 1251 is 85.1: out of range, although the raw number is tiny."""
    p = ModbusPoint("t", Table.INPUT, 0, DataType.UINT16, scale=0.1, offset=-40.0,
                    valid_range=(-40.0, 85.0))

    for raw, want in ((0, (Quality.GOOD, "")), (1250, (Quality.GOOD, "")),
                      (1251, (Quality.OUT_OF_RANGE, "above"))):
        assert judge(codec.decode(p, [raw]), plausible_range(p)) == want
    assert judge(float("nan"), (0.0, 1.0)) == (Quality.BAD, "nan")
    assert judge(-0.5, (0.0, 1.0)) == (Quality.OUT_OF_RANGE, "below")
    assert judge("text", (0.0, 1.0)) == (Quality.GOOD, "")
