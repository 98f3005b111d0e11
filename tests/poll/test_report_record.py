"""A poller's device and its report filter share one list (``poll.report.record``, ``adopt``):
the device's last GOOD values and, from its first report, the filter's slots of each point. The
filter decides exactly as with a list of its own (issue #15 memory: one list a device, not two)."""

from __future__ import annotations

import asyncio
import sys

from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.config.model import DeviceConfig, TcpBus
from edge_agent.platform.clock import ClockProbe
from edge_agent.poll.device_base import UNSET
from edge_agent.poll.engine import Poller
from edge_agent.poll.report import ReportFilter, record
from edge_agent.profiles.model import DataType, Deadband, ModbusPoint, Reporting, Table
from edge_agent.readings import Quality, Reading, Value
from tests.poll.fakes import FakeBus, make_config, profile

S = 1_000_000_000
_REPS = [Reporting(), Reporting(deadband=Deadband(1.0)), Reporting(deadband=Deadband(10.0, True)),
         Reporting(heartbeat_s=2.5), Reporting(deadband=Deadband(1.0), heartbeat_s=3.0),
         Reporting(deadband=Deadband(1.0), alarm=True)]
_POINTS = [ModbusPoint(f"p{k}", Table.HOLDING, k, DataType.UINT16, reporting=rep)
           for k, rep in enumerate(_REPS)]
_PROFILE_POINTS = ["p0", "p1", "p2", "p3"]  # p4, p5: not in the devices' "profile"
_VALUES = st.one_of(st.floats(-20, 20), st.integers(-5, 5), st.just(float("nan")), st.booleans())


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(
    st.sampled_from(["a", "b", "c"]),
    st.sampled_from(["good", "offer", "forget"]),
    st.lists(st.tuples(st.sampled_from(_POINTS), _VALUES), max_size=6),
    st.sampled_from([Quality.GOOD, Quality.BAD, Quality.OUT_OF_RANGE, Quality.STALE]),
    st.sampled_from(["", "x", "timeout"])), max_size=60))
def test_an_adopted_record_decides_as_a_list_of_the_filter_s_own(
        seq: list[tuple[str, str, list[tuple[ModbusPoint, Value]], Quality, str]]) -> None:
    """Random GOOD batches, single readings of any quality, forgotten devices and points
    outside the record: the same decisions, the same readings let through, and the device's
    GOOD values in the record untouched by the filter."""
    own, shared = ReportFilter(), ReportFilter()
    places, template = record(_PROFILE_POINTS, UNSET)
    recs = {d: template.copy() for d in ("a", "b")}  # "c": not adopted
    goods = {d: object() for d in recs}
    for d, r in recs.items():
        r[places["p1"]] = goods[d]  # a GOOD value the device keeps
        shared.adopt(r)
    for t, (dev, kind, items, q, reason) in enumerate(seq):
        mono = t * S // 2
        rec = recs.get(dev)  # (None: "c", by name)
        if kind == "good":
            want = own.offer_good(dev, list(items), mono)
            got = shared.offer_good(dev, list(items), mono, rec)
            assert [(p.name, v) for p, v in got] == [(p.name, v) for p, v in want]
        elif kind == "offer":
            for p, v in items:
                assert (own.offer(dev, p.name, v, q, reason, mono, p.reporting)
                        == shared.offer(dev, p.name, v, q, reason, mono, p.reporting, rec))
        else:
            own.forget(dev)
            shared.forget(dev, rec)
    assert set(shared._last) <= {"c"}  # nothing of the adopted devices' own
    for d, r in recs.items():
        assert r[places["p1"]] is goods[d]
        assert all(r[places[n]] is UNSET for n in _PROFILE_POINTS if n != "p1")


def test_a_polled_device_holds_one_list_for_its_values_and_the_filter() -> None:
    lamp = profile("street_lamp")
    cfg = make_config([TcpBus("pole-1", "127.0.0.1", 1502)],
                      [DeviceConfig("lamp-1", lamp.name, "pole-1", unit_id=1)], [lamp])
    bus = FakeBus("pole-1", latency_s=0.0)
    out: list[Reading] = []

    async def main() -> None:
        poller = Poller(cfg, {"pole-1": bus}, out.append,
                        clock=ClockProbe(synced=lambda: False, boot_id="b"))
        dp = poller.devices["lamp-1"]
        rec = dp.last_values
        n = len(lamp.points)
        assert len(rec) == 1 + n  # GOOD values only, nothing reported yet
        poller._make_jobs(0.0)
        for job in poller.jobs:
            await poller._run_job(job)
        assert rec is dp.last_values and not poller._filter._last  # the same list, grown
        assert len(rec) == 1 + 3 * n
        # grown at once: CPython allocated what it needs, rounded up to 4 slots
        assert sys.getsizeof(rec) <= sys.getsizeof([None] * len(rec)) + 3 * 8
        good = {r.point: r.value for r in out if r.quality is Quality.GOOD}
        assert good and all(dp.last_value(p.name) == good.get(p.name, UNSET)
                            for p in lamp.points)
        assert {r.point for r in out} == {p.name for p in lamp.points}  # first reports, all
        out.clear()
        for job in poller.jobs:
            await poller._run_job(job)
        assert not out  # the same registers: nothing moved, nothing reported

    asyncio.run(main())


def test_forgetting_an_adopted_device_keeps_its_list_and_its_good_values() -> None:
    f = ReportFilter()
    places, rec = record(["p0", "p1"], UNSET)
    f.adopt(rec)
    f.forget("a", rec)  # nothing reported yet
    p0 = _POINTS[0]
    rec[places["p0"]] = 7
    assert f.offer_good("a", [(p0, 7)], S, rec) and not f.offer_good("a", [(p0, 7)], 2 * S, rec)
    f.forget("a", rec)
    assert rec[places["p0"]] == 7
    assert f.offer_good("a", [(p0, 7)], 3 * S, rec)  # reported again: forgotten
    assert f.offer("a", "p9", 1, Quality.GOOD, "", 3 * S, p0.reporting, rec)  # not in the record
    assert len(rec) == 1 + 3 * 2 + 2 and not f._last  # grown in place
    assert not f.offer("a", "p9", 1, Quality.GOOD, "", 4 * S, p0.reporting, rec)
    f.forget("a", rec)
    assert f.offer("a", "p9", 1, Quality.GOOD, "", 5 * S, p0.reporting, rec)
    assert not f.offer("a", "p9", 1, Quality.GOOD, "", 5 * S, p0.reporting, rec)
