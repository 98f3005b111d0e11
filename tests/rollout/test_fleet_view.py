"""The fleet table's flags and the rollout's waves, on hand-made statuses."""

from __future__ import annotations

from typing import Any

from edge_agent.cli.fleet_view import Thresholds, plan_waves, rows, table_rows

NOW = 1_800_000_000_000


HARBOUR = {"district": "harbour"}


def status(version: int, *, age_s: float = 1, state: str = "online", depth: int = 0,
           last: dict[str, Any] | None = None, pinned: bool = False,
           phase: str = "committed", tags: dict[str, str] | None = None,
           addressed: dict[str, Any] | None = None) -> dict[str, Any]:
    """A gateway of district=harbour running a bundle addressed to district=harbour."""
    return {"state": state, "ts_ms": NOW - int(age_s * 1000), "version": "1.0",
            "outbox_depth": depth, "devices": {"up": 3, "total": 4},
            "clock": {"synced": True}, "tags": HARBOUR if tags is None else tags,
            "config": {"version": version, "hash": "ab" * 32, "pinned": pinned, "state": phase,
                       "last_rollout": last,
                       "addressed": {"selector": HARBOUR} if addressed is None else addressed}}


def flags(statuses: dict[str, dict[str, Any]], **th: Any) -> dict[str, tuple[str, ...]]:
    return {r.gateway: r.flags for r in rows(statuses, Thresholds(**th), now_ms=NOW)}


def test_flags() -> None:
    got = flags({
        "ok": status(5),
        "old": status(4),
        "gone": status(5, state="offline"),
        "quiet": status(5, age_s=400),
        "full": status(5, depth=5000),
        "back": status(4, last={"version": 5, "state": "rolled_back", "reason": "x"}),
        "pin": status(4, pinned=True),
        "trial": status(5, phase="probation"),
    })
    assert got["ok"] == ()
    assert got["old"] == ("behind",)
    assert got["gone"] == got["quiet"] == ("silent",)
    assert got["full"] == ("backlogged",)
    assert got["back"] == ("behind", "rolled_back")
    assert got["pin"] == ("behind", "pinned")
    assert got["trial"] == ("probation",)
    assert flags({"a": status(5)}, target_version=6)["a"] == ("behind",)
    assert flags({"a": status(5, age_s=50)}, silent_after_s=30)["a"] == ("silent",)


def test_a_rollback_superseded_by_a_newer_version_is_not_flagged() -> None:
    got = flags({"a": status(6, last={"version": 5, "state": "rolled_back"})})
    assert got["a"] == ()


def test_table_rows_survive_odd_statuses() -> None:
    rs = rows({"x": {"state": "online"}, "y": {"config": "nonsense", "ts_ms": "no"}},
              Thresholds(), now_ms=NOW)
    assert len(table_rows(rs, now_ms=NOW)) == 2


def test_waves_canary_first() -> None:
    gws = ["a", "b", "c", "d", "e"]
    assert plan_waves(gws, ["c"], 2) == [["c"], ["a", "b"], ["d", "e"]]
    assert plan_waves(gws, [], 3) == [["a"], ["b", "c", "d"], ["e"]]
    assert plan_waves(gws, ["x"], 10) == [["a"], ["b", "c", "d", "e"]]
    assert plan_waves([], [], 5) == []


def test_behind_is_judged_within_the_group_a_bundle_addresses() -> None:
    north = {"district": "north"}
    got = flags({
        "h1": status(5), "h2": status(4),
        "n1": status(2, tags=north, addressed={"selector": north}),
        "n2": status(1, tags=north, addressed={"selector": north}),
        "n3": status(0, tags=north, addressed={}),  # never had a bundle
        "solo": status(1, tags={"district": "hill"}, addressed={"targets": ["solo"]}),
        "fix": status(7, tags=north, addressed={"targets": ["fix"]}),  # one box's fix
    })
    assert got["h1"] == () and got["h2"] == ("behind",)
    assert got["n1"] == () and got["n2"] == ("behind",) and got["n3"] == ("behind",)
    assert got["solo"] == ()  # harbour's version 5 is no business of district=hill
    assert got["fix"] == ()  # a newer bundle for one box makes no other box behind


def test_seen_of_an_offline_gateway_is_when_it_was_last_heard_of() -> None:
    will = status(5, state="offline", age_s=7200)  # a last will made when it connected
    will["witness_ms"] = NOW - 90_000  # its last batches' witness
    rs = rows({"gw": will}, Thresholds(), now_ms=NOW)
    assert rs[0].seen_ms == NOW - 90_000 and rs[0].seen_ago(NOW) == "90s"
    assert table_rows(rs, now_ms=NOW)[0][2] == "90s"
    assert rs[0].json()["seen_ms"] == NOW - 90_000
