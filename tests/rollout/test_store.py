"""The state directory under kill -9: always the old or the new bundle, complete, never half."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.rollout.effective import load_bundle_dir
from edge_agent.rollout.store import BundleStore, Probation, RolloutState

from .helpers import bundle, local_config, managed, signed

ROOT = Path(__file__).resolve().parents[2]


def test_state_round_trip(tmp_path: Path) -> None:
    store = BundleStore(tmp_path)
    key = Ed25519PrivateKey.generate()
    b = bundle(5)
    slot = store.stage(b, signed(b, key))
    st = RolloutState(current=slot, highest_version=5,
                      probation=Probation(5, 1, 3, 1, 4, 60, 0.95, "ab", True),
                      pinned={"at_ms": 1, "reason": "x"})
    store.save(st)
    assert store.load() == st
    assert (store.path(slot) / "bundle.cose").read_bytes() == signed(b, key)
    assert (store.path(slot) / "agent.toml").read_text() == b.config


def test_a_damaged_state_runs_local_and_keeps_the_highest_version(tmp_path: Path) -> None:
    store = BundleStore(tmp_path)
    b = bundle(12)
    store.stage(b, signed(b, Ed25519PrivateKey.generate()))
    store.root.mkdir(exist_ok=True)
    store.state_file.write_text("{not json")
    st = store.load()
    assert st.current is None and st.unreadable and st.highest_version == 12


def test_gc_keeps_what_the_state_names(tmp_path: Path) -> None:
    store = BundleStore(tmp_path)
    key = Ed25519PrivateKey.generate()
    slots = []
    for v in (1, 2, 3):
        b = bundle(v, managed(unit_id=v))
        slots.append(store.stage(b, signed(b, key)))
    st = RolloutState(current=slots[2], last_good=slots[0], highest_version=3)
    store.gc(st)
    assert sorted(p.name for p in store.bundles.iterdir()) == sorted([slots[0].dir,
                                                                        slots[2].dir])


@pytest.mark.timeout(120)
def test_kill9_at_any_point_leaves_a_complete_configuration(tmp_path: Path) -> None:
    local = local_config(tmp_path / "etc")
    state_dir = tmp_path / "etc" / "state"
    rng = random.Random(16)
    store = BundleStore(state_dir)
    last = 0
    for _ in range(15):
        child = subprocess.Popen([sys.executable, "-m", "tests.rollout.store_child",
                                  str(state_dir)], cwd=ROOT, stdout=subprocess.PIPE)
        assert child.stdout is not None and child.stdout.readline() == b"ready\n"
        time.sleep(rng.uniform(0.0, 0.4))
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        child.stdout.close()
        st = store.load()
        assert not st.unreadable
        assert st.current is not None and st.current.version >= last
        assert st.highest_version == st.current.version
        cfg = load_bundle_dir(local, store.path(st.current))  # complete: it loads
        assert cfg.devices[0].unit_id == 1 + st.current.version % 200
        if st.last_good is not None:
            load_bundle_dir(local, store.path(st.last_good))
        last = st.current.version
    assert last > 15


def test_a_staged_bundle_the_state_never_named_is_not_passed(tmp_path: Path) -> None:
    """The daemon died between staging and switching the state: that version was not admitted
    (the operator may send it again), and the next start clears the leftover."""
    from edge_agent.rollout.source import ConfigSource

    local = local_config(tmp_path / "etc")
    store = BundleStore(tmp_path / "etc" / "state")
    b = bundle(2)
    store.stage(b, signed(b, Ed25519PrivateKey.generate()))
    assert store.load().highest_version == 0
    src = ConfigSource(local)
    src.boot()
    assert src.running is None and list(store.bundles.iterdir()) == []
