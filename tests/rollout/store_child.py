"""Child process for test_store: applies bundle after bundle as fast as it can, the way the
daemon does (stage, then switch the state), until it is killed."""

from __future__ import annotations

import sys
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.rollout.store import BundleStore
from tests.rollout.helpers import bundle, managed, signed


def main(state_dir: str) -> None:
    store = BundleStore(Path(state_dir))
    key = Ed25519PrivateKey.generate()
    st = store.load()
    v = st.highest_version
    print("ready", flush=True)
    while True:
        v += 1
        b = bundle(v, managed(port=1000 + v % 50000, unit_id=1 + v % 200))
        slot = store.stage(b, signed(b, key))
        st.last_good, st.current, st.highest_version = st.current, slot, v
        store.save(st)
        store.gc(st)


if __name__ == "__main__":
    main(sys.argv[1])
