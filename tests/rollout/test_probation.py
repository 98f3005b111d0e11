"""The probation verdict on snapshots."""

from __future__ import annotations

from edge_agent.rollout.probation import Snapshot, device_snapshot, judge


def dev(failures: int, good: bool) -> dict[str, object]:
    return {"consecutive_failures": failures, "last_good_ns": 1 if good else None,
            "last_error": "BusTimeout" if failures else ""}


def test_snapshot_counts_up_down_and_unpolled() -> None:
    s = device_snapshot({"a": dev(0, True), "b": dev(3, True), "c": dev(0, False),
                         "d": dev(2, True), "e": dev(1, False)}, 5, True)
    assert (s.up, s.down, s.total) == (2, 2, 5)  # d: one lost answer is no verdict
    assert s.failing == ("b: BusTimeout", "e: BusTimeout")  # e never answered


def test_judge() -> None:
    before = Snapshot(None, 7, 0, 7)
    assert judge(before, Snapshot(True, 7, 0, 7), 0.9) == ""
    assert judge(before, Snapshot(False, 7, 0, 7), 0.9) == "uplink_down"
    assert judge(before, Snapshot(True, 5, 2, 7), 0.9) == "devices_worse"
    assert judge(before, Snapshot(None, 5, 2, 7), 0.7) == ""  # looser bundle ratio
    assert judge(Snapshot(None, 5, 2, 7), Snapshot(True, 5, 2, 7), 1.0) == ""  # no worse
    assert judge(before, Snapshot(True, 0, 0, 7), 1.0) == ""  # nothing polled yet: no evidence
    assert judge(Snapshot(None, 0, 0, 0), Snapshot(True, 0, 3, 3), 1.0) == ""  # nothing before


def test_a_moved_uplink_must_be_proven() -> None:
    before = Snapshot(None, 7, 0, 7)
    ok = Snapshot(True, 7, 0, 7, batches_acked=3, config_subscribed=True, sessions=1)
    assert judge(before, ok, 0.9, uplink_moved=True) == ""
    # connected to some broker, nothing acknowledged / no bundle can reach it: stranded
    assert judge(before, Snapshot(True, 7, 0, 7, batches_acked=0, config_subscribed=True,
                                  sessions=1), 0.9, uplink_moved=True) == "uplink_unproven"
    assert judge(before, Snapshot(True, 7, 0, 7, batches_acked=5, config_subscribed=False,
                                  sessions=1), 0.9, uplink_moved=True) == "uplink_unproven"
    assert judge(before, Snapshot(True, 7, 0, 7, batches_acked=5, config_subscribed=None,
                                  sessions=3), 0.9, uplink_moved=True) == "uplink_unproven"
    assert judge(before, Snapshot(False, 7, 0, 7), 0.9, uplink_moved=True) == "uplink_down"
    # an unmoved uplink needs only to be connected, as before
    assert judge(before, Snapshot(True, 7, 0, 7), 0.9) == ""
