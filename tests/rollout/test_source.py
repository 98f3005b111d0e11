"""Which configuration a start runs: the pin, probation starts, crash loops, a bundle that no
longer loads -- and always one that loads."""

from __future__ import annotations

import shutil
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.rollout.probation import MAX_STARTS
from edge_agent.rollout.source import ConfigSource
from edge_agent.rollout.store import BundleStore, Probation, Slot

from .helpers import bundle, local_config, managed, signed

KEY = Ed25519PrivateKey.generate()


def applied(local: Path, *, good: int | None, probation: int | None) -> list[Slot]:
    """The state a daemon leaves: ``good`` committed, ``probation`` staged on top of it."""
    store = BundleStore(local.parent / "state")
    st = store.load()
    slots = []
    for v in (good, probation):
        if v is None:
            continue
        b = bundle(v, managed(unit_id=v))
        slot = store.stage(b, signed(b, KEY))
        slots.append(slot)
        st.last_good, st.current, st.highest_version = st.current, slot, v
    if probation is not None:
        st.probation = Probation(probation, 0, 1, 0, 1, 5, 0.9, "aa", False)
    store.save(st)
    return slots


def test_no_bundle_runs_local(tmp_path: Path) -> None:
    src = ConfigSource(local_config(tmp_path))
    assert src.boot().devices[0].unit_id == 1 and src.running is None


def test_committed_bundle_runs(tmp_path: Path) -> None:
    local = local_config(tmp_path)
    applied(local, good=4, probation=None)
    src = ConfigSource(local)
    assert src.boot().devices[0].unit_id == 4 and src.running is not None


def test_probation_counts_starts_then_calls_it_a_crash_loop(tmp_path: Path) -> None:
    local = local_config(tmp_path)
    applied(local, good=4, probation=5)
    for start in range(1, MAX_STARTS + 1):
        src = ConfigSource(local)
        assert src.boot().devices[0].unit_id == 5
        assert src.state.probation is not None and src.state.probation.starts == start
    src = ConfigSource(local)
    cfg = src.boot()
    assert cfg.devices[0].unit_id == 4  # the last good one
    assert src.state.probation is None and src.state.highest_version == 5
    assert src.state.last_result is not None
    assert src.state.last_result["reason"] == "crash_loop"
    assert src.state.last_result["reported"] is False
    assert ConfigSource(local).boot().devices[0].unit_id == 4  # and it stays there


def test_a_bundle_that_no_longer_loads_in_probation_rolls_back(tmp_path: Path) -> None:
    local = local_config(tmp_path)
    _, bad = applied(local, good=4, probation=5)
    (BundleStore(tmp_path / "state").path(bad) / "agent.toml").write_text("nonsense = [")
    src = ConfigSource(local)
    assert src.boot().devices[0].unit_id == 4
    assert src.state.last_result and src.state.last_result["reason"] == "start_failed"


def test_a_committed_bundle_that_no_longer_loads_runs_local(tmp_path: Path) -> None:
    local = local_config(tmp_path)
    (slot,) = applied(local, good=4, probation=None)
    shutil.rmtree(BundleStore(tmp_path / "state").path(slot))
    src = ConfigSource(local)
    assert src.boot().devices[0].unit_id == 1 and src.running is None


def test_first_bundle_failing_goes_back_to_local(tmp_path: Path) -> None:
    local = local_config(tmp_path)
    applied(local, good=None, probation=5)
    for _ in range(MAX_STARTS):
        ConfigSource(local).boot()
    src = ConfigSource(local)
    assert src.boot().devices[0].unit_id == 1 and src.running is None


def test_pinned_runs_local(tmp_path: Path) -> None:
    local = local_config(tmp_path)
    applied(local, good=4, probation=None)
    store = BundleStore(tmp_path / "state")
    st = store.load()
    st.pinned = {"at_ms": 1, "reason": "on site"}
    store.save(st)
    assert ConfigSource(local).boot().devices[0].unit_id == 1
