"""Report-by-exception rules (pure logic)."""

from __future__ import annotations

import gc
import sys
import tracemalloc

from hypothesis import given
from hypothesis import strategies as st

from edge_agent.poll.report import ReportFilter, moved
from edge_agent.profiles.model import DataType, Deadband, ModbusPoint, Reporting, Table
from edge_agent.readings import Quality, Reading, Value

S = 1_000_000_000


def r(value: Value, t_s: float, quality: Quality = Quality.GOOD, reason: str = "") -> Reading:
    return Reading("d", "p", value, "", ts_ns=0, mono_ns=int(t_s * S), quality=quality,
                   reason=reason)


def emitted(rep: Reporting, readings: list[Reading]) -> list[Value]:
    f = ReportFilter()
    return [x.value for x in readings if f.should_emit(x, rep)]


def test_absolute_deadband_is_against_last_reported() -> None:
    rep = Reporting(deadband=Deadband(1.0))
    # creeping by 0.4 never passes against the previous sample, but does against the last report
    values = [10.0, 10.4, 10.8, 11.2, 11.3, 9.9]
    assert emitted(rep, [r(v, i) for i, v in enumerate(values)]) == [10.0, 11.2, 9.9]


def test_percent_deadband() -> None:
    rep = Reporting(deadband=Deadband(10.0, percent=True))
    values = [100.0, 109.0, 111.0, 121.0, 123.0]
    assert emitted(rep, [r(v, i) for i, v in enumerate(values)]) == [100.0, 111.0, 123.0]


def test_heartbeat_reemits_unchanged_value() -> None:
    rep = Reporting(deadband=Deadband(5.0), heartbeat_s=10.0)
    got = emitted(rep, [r(1.0, t) for t in (0, 4, 9.9, 10, 15, 19.9, 20.1)])
    assert got == [1.0, 1.0, 1.0]


def test_quality_and_reason_changes_always_emit() -> None:
    rep = Reporting(deadband=Deadband(100.0))
    f = ReportFilter()
    seq = [
        r(1.0, 0), r(None, 1, Quality.BAD, "timeout"), r(None, 2, Quality.BAD, "timeout"),
        r(None, 3, Quality.BAD, "crc"), r(1.0, 4, Quality.STALE), r(1.0, 5, Quality.STALE),
        r(1.0, 6),
    ]
    assert [f.should_emit(x, rep) for x in seq] == [True, True, False, True, True, False, True]


def test_alarm_reports_every_change_despite_deadband() -> None:
    rep = Reporting(deadband=Deadband(10.0), alarm=True)
    assert emitted(rep, [r(v, i) for i, v in enumerate([0, 1, 1, 0, 0, 1])]) == [0, 1, 0, 1]


def test_non_numeric_values_compare_by_equality() -> None:
    rep = Reporting(deadband=Deadband(1.0))
    seq: list[Value] = ["open", "open", "closed", True, True, False]
    assert emitted(rep, [r(v, i) for i, v in enumerate(seq)]) == ["open", "closed", True, False]


def test_devices_are_independent_and_forget() -> None:
    rep = Reporting()
    f = ReportFilter()
    a = Reading("a", "p", 1, "", 0, 0)
    b = Reading("b", "p", 1, "", 0, 0)
    assert f.should_emit(a, rep) and f.should_emit(b, rep)
    assert not f.should_emit(a, rep)
    f.forget("a")
    assert f.should_emit(a, rep) and not f.should_emit(b, rep)


@given(
    st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=50),
    st.floats(0.001, 1000),
)
def test_reported_series_tracks_within_deadband(values: list[float], band: float) -> None:
    """Every suppressed sample is within the band of the last reported one."""
    rep = Reporting(deadband=Deadband(band))
    f = ReportFilter()
    last: float | None = None
    for i, v in enumerate(values):
        if f.should_emit(r(v, i), rep):
            last = v
        else:
            assert last is not None and abs(v - last) <= band


def test_nan_is_a_change_once() -> None:
    rep = Reporting(deadband=Deadband(1.0))
    assert moved(1.0, float("nan"), rep)
    assert not moved(float("nan"), float("nan"), rep)
    assert not moved(float("nan"), float("nan"), Reporting())


def _moved_by_floats(last: Value, new: Value) -> bool:
    """Any change counts (no deadband, or an alarm point): numbers compared as floats, NaN
    equal to NaN, anything else by equality (what ``moved`` did before its fast path)."""
    import math

    def num(v: Value) -> float | None:
        return None if isinstance(v, bool) or not isinstance(v, int | float) else float(v)

    a, b = num(last), num(new)
    if a is not None and b is not None:
        return a != b and not (math.isnan(a) and math.isnan(b))
    return last != new


_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-(2**40), 2**40),
                    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(["on", "off"]))


@given(_VALUES, _VALUES, st.booleans())
def test_any_change_rule_is_equality_with_nan_equal_to_nan(last: Value, new: Value,
                                                           alarm: bool) -> None:
    rep = Reporting(deadband=Deadband(5.0) if alarm else None, alarm=alarm)
    assert moved(last, new, rep) == _moved_by_floats(last, new)
    assert not moved(float("nan"), float("nan"), rep) and moved(float("nan"), 1.0, rep)


@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.sampled_from(["x", "y", "z"]),
                          st.floats(0, 10), st.sampled_from([Quality.GOOD, Quality.BAD])),
                max_size=60))
def test_compact_store_decides_as_one_record_per_device_and_point(
        seq: list[tuple[str, str, float, Quality]]) -> None:
    """Devices whose points arrive in any order (sharing index maps or not) are judged exactly
    as by a plain {(device, point): last reported} record."""
    rep = Reporting(deadband=Deadband(1.0), heartbeat_s=5.0)
    f = ReportFilter()
    ref: dict[tuple[str, str], tuple[float, Quality, int]] = {}
    for t, (dev, point, v, q) in enumerate(seq):
        mono = t * S
        last = ref.get((dev, point))
        want = (last is None or last[1] != q or mono - last[2] >= 5 * S
                or abs(v - last[0]) > 1.0)
        got = f.offer(dev, point, v, q, "", mono, rep)
        assert got == want
        if want:
            ref[(dev, point)] = (v, q, mono)


def test_a_device_costs_a_small_flat_record_and_devices_of_a_profile_share_its_index() -> None:
    """Memory: a thousand devices' points are held for ever. Ten points of a device cost about
    a list of 41 slots (old: an object and a key tuple per point, ~2 KiB a device)."""
    import tracemalloc

    rep = Reporting()
    names = [f"point_{k}" for k in range(10)]
    devices = [f"pole-{i:04d}-lamp" for i in range(200)]
    value, mono = 1.5, 12_345 * S  # one value and time for all: only the filter's own memory
    f = ReportFilter()
    f.offer("warm-up", names[0], value, Quality.GOOD, "", mono, rep)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for d in devices:
            for n in names:
                assert f.offer(d, n, value, Quality.GOOD, "", mono, rep)
        per_device = (tracemalloc.get_traced_memory()[0] - before) / len(devices)
    finally:
        tracemalloc.stop()
    assert per_device < 700, per_device
    assert all(not f.offer(d, n, value, Quality.GOOD, "", mono, rep)
               for d in devices for n in names)


_REPS = [Reporting(), Reporting(deadband=Deadband(1.0)), Reporting(deadband=Deadband(10.0, True)),
         Reporting(heartbeat_s=2.5), Reporting(deadband=Deadband(1.0), heartbeat_s=3.0),
         Reporting(deadband=Deadband(1.0), alarm=True)]
_POINTS = [ModbusPoint(f"p{k}", Table.HOLDING, k, DataType.UINT16, reporting=rep)
           for k, rep in enumerate(_REPS)]


@given(st.lists(st.tuples(
    st.sampled_from(["a", "b"]),
    st.lists(st.tuples(st.sampled_from(_POINTS),
                       st.one_of(st.floats(-20, 20), st.integers(-5, 5), st.just(float("nan")),
                                 st.booleans())), max_size=8),
    st.sampled_from([None, Quality.BAD, Quality.OUT_OF_RANGE])), max_size=40))
def test_offer_good_decides_as_offer_item_by_item(
        seq: list[tuple[str, list[tuple[ModbusPoint, Value]], Quality | None]]) -> None:
    """A request's GOOD values offered at once pass exactly when, one by one, ``offer`` would
    pass them (every rule: deadbands, heartbeats, alarms, NaN, first readings, a quality that
    changed in between), and leave the filter in the same state."""
    one, many = ReportFilter(), ReportFilter()
    for t, (dev, items, other) in enumerate(seq):
        mono = t * S // 2
        want = [(p, v) for p, v in items
                if one.offer(dev, p.name, v, Quality.GOOD, "", mono, p.reporting)]
        got = many.offer_good(dev, list(items), mono)
        assert [(p.name, v) for p, v in got] == [(p.name, v) for p, v in want]
        assert all(a is b for (a, _), (b, _) in zip(got, want, strict=True))
        if other is not None and items:  # a BAD / out-of-range reading in between
            p = items[0][0]
            assert (one.offer(dev, p.name, None, other, "x", mono, p.reporting)
                    == many.offer(dev, p.name, None, other, "x", mono, p.reporting))
    assert repr(one._last) == repr(many._last)


def test_a_device_costs_one_list_of_two_slots_a_point() -> None:
    """Memory of a thousand devices: the filter keeps a device's points in one list exactly as
    long as they need (no room to grow), two slots a point: a GOOD reading's value alone (any
    other reading's value, quality and reason together), its time; and one index map for every
    device whose points came in the same order."""
    f = ReportFilter()
    rep = Reporting()
    for dev in ("a", "b"):
        for k, name in enumerate(("p0", "p1", "p2")):
            assert f.offer(dev, name, k, Quality.GOOD, "", S, rep)
    f.offer("a", "p1", None, Quality.BAD, "timeout", 2 * S, rep)
    a, b = f._last["a"], f._last["b"]
    assert len(a) == len(b) == 1 + 2 * 3 and a[0] is b[0]
    assert a[1:3] == [0, S] and a[3:5] == [(None, Quality.BAD, "timeout"), 2 * S]
    assert f.offer("a", "p2", 2, Quality.OUT_OF_RANGE, "above", 2 * S, rep)  # a reason: noted
    assert a[5] == (2, Quality.OUT_OF_RANGE, "above")
    assert not f.offer("a", "p2", 2, Quality.OUT_OF_RANGE, "above", 3 * S, rep)
    assert f.offer("a", "p2", 2, Quality.GOOD, "", 3 * S, rep)  # back to GOOD: a change
    assert f._last["a"][5] == 2
    assert not f.offer_good("a", [], 3 * S)
    assert not f.offer("a", "p1", None, Quality.BAD, "timeout", 3 * S, rep)
    assert f.offer("a", "p1", None, Quality.BAD, "crc", 3 * S, rep)  # another reason
    assert f.offer("a", "p1", 1, Quality.GOOD, "", 3 * S, rep)


def test_a_device_s_first_readings_leave_its_list_and_nothing_else() -> None:
    """Growing a device's list point by point leaves no tuple behind (CPython keeps tuples of
    up to 20 items in free lists: a lamp's 20 slots, 100 KiB for the district's lamps), and
    the list is exactly as long as its points need."""
    f = ReportFilter()
    rep = Reporting()
    values = [1000 + k for k in range(11)]
    for k, v in enumerate(values):  # the shared index maps, made by a first device
        f.offer("first", f"p{k}", v, Quality.GOOD, "", S, rep)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for k, v in enumerate(values):
            f.offer("lamp", f"p{k}", v, Quality.GOOD, "", S, rep)
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    held = [s for s in after.compare_to(before, "lineno")
            if s.traceback[0].filename.endswith("edge_agent/poll/report.py") and s.size_diff]
    lst = f._last["lamp"]
    assert len(lst) == 1 + 2 * 11 and sys.getsizeof(lst) == sys.getsizeof([None] * len(lst))
    # the list (its object and items) alone
    assert sum(s.size_diff for s in held) <= sys.getsizeof(lst) + 16, held
