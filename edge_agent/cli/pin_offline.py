"""`edge-agent config pin|unpin` while the daemon is not running (stopped, or crash-looping on a
bundle): the technician's pin is written straight into the rollout state, so the next start runs
the local agent.toml (or, unpinned, the last good bundle).

Only when nothing listens at the control socket (``DaemonNotRunning``): a running daemon owns the
state and is always asked. The local config must load (as for a pin through the daemon). A bundle
in probation is rolled back with reason ``pinned`` -- recorded unreported, so the daemon reports it
at its next start. Writing needs the state directory's rights (root or the service user).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from edge_agent.cli.common import EXIT_FAIL, EXIT_USAGE, CliError
from edge_agent.errors import CommandStoreError, ConfigError


def pin_offline(config: Path, pin: bool, reason: str) -> dict[str, Any]:
    """Pin (or unpin) in the state on disk; what `config show` would say. CliError when the local
    config does not load or the state cannot be written."""
    from edge_agent.config.load import load_config
    from edge_agent.rollout.source import rolled_back
    from edge_agent.rollout.store import BundleStore

    try:
        local = load_config(config)
    except ConfigError as exc:
        raise CliError(f"{config} does not load, so it cannot be pinned: "
                       + "; ".join(map(str, exc.problems))[:500],
                       "fix it (edge-agent check-config) and pin again", EXIT_USAGE,
                       "config_invalid") from None
    store = BundleStore(local.state_dir)
    st = store.load()
    if st.unreadable:
        raise CliError(f"{store.state_file}: {st.unreadable}", "start the daemon: it recovers "
                       "the state (the local config runs meanwhile)", EXIT_FAIL,
                       "state_unreadable")
    if pin and st.pinned is None:
        if st.probation is not None:
            rolled_back(st, "pinned", "a technician pinned the local config during probation "
                        "(daemon not running)")
        st.pinned = {"at_ms": time.time_ns() // 1_000_000, "reason": reason[:200],
                     "offline": True}
    elif not pin:
        st.pinned = None
    try:
        store.save(st)
    except CommandStoreError as exc:
        raise CliError(f"the daemon is not running and the pin cannot be written: {exc}",
                       "run it with sudo (the state directory belongs to the service)",
                       EXIT_FAIL, "state_unwritable") from None
    cur = st.current
    return {"version": 0 if st.pinned or cur is None else cur.version,
            "source": "local" if st.pinned or cur is None else "bundle",
            "state": "committed", "hash": "", "pinned": st.pinned is not None,
            "pin_reason": (st.pinned or {}).get("reason", ""),
            "highest_version": st.highest_version,
            "last_rollout": st.last_result and {k: st.last_result.get(k) for k in
                                                ("version", "state", "reason", "t_ms")},
            "daemon": "not running: takes effect at its next start"}
