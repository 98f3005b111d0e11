"""Which configuration the daemon runs: decided at every start and every reload.

The daemon is always started on the local agent.toml (the unit's ExecStart= names it; /etc is
read-only for the service). That file gives the box its identity and state directory, and is the
configuration of last resort; it must load, as before. Then, from ``<state_dir>/config/state.json``
(rollout/store.py):

* pinned by a technician: the local config runs;
* a bundle in probation: one more start on it is counted; past ``MAX_STARTS`` it is a crash loop
  and the last good configuration runs instead (rolled back, reported);
* the current bundle, merged with the local settings -- unless it no longer loads: in probation
  that is a rollback (``start_failed``), else the local config runs and the error is logged;
* no bundle: the local config.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from edge_agent.config.load import load_config
from edge_agent.config.model import AgentConfig
from edge_agent.errors import CommandStoreError, ConfigError
from edge_agent.rollout.hashes import content_hash, profile_hash
from edge_agent.rollout.probation import MAX_STARTS
from edge_agent.rollout.store import BundleStore, RolloutState, Slot

log = logging.getLogger("edge_agent.rollout")


def rolled_back(state: RolloutState, reason: str, detail: str = "",
                evidence: dict[str, Any] | None = None) -> None:
    """Move ``state`` back to its last good configuration and record why (not yet reported)."""
    p, failed = state.probation, state.current
    state.last_result = {
        "version": p.version if p else (failed.version if failed else 0),
        "state": "rolled_back", "reason": reason, "detail": detail[:4096],
        "evidence": evidence or {}, "t_ms": time.time_ns() // 1_000_000,
        "kid": p.kid if p else "", "hash": failed.hash if failed else "", "reported": False}
    state.current = state.last_good
    state.probation = None


def describe(cfg: AgentConfig) -> dict[str, Any]:
    """Hash of the running configuration (the bundle's content hash for a bundle: same text,
    same profiles) and of every profile it references."""
    texts: dict[str, str] = {}
    for name in sorted({d.profile for d in cfg.devices}):
        profile = cfg.profiles.get(name)
        try:
            texts[name] = Path(profile.source).read_text("utf-8") if profile else ""
        except (OSError, UnicodeDecodeError):
            texts[name] = ""
    try:
        text = cfg.source.read_text("utf-8")
    except (OSError, UnicodeDecodeError):
        text = ""
    return {"hash": content_hash(text, texts).hex(),
            "profiles": {n: profile_hash(t) for n, t in texts.items()}}


class ConfigSource:
    def __init__(self, local_path: Path) -> None:
        """ConfigError when the local config does not load: the daemon refuses to start."""
        self.local_path = local_path
        self.local = load_config(local_path)
        self.store = BundleStore(self.local.state_dir)
        self.state = self.store.load()
        self.running: Slot | None = None  # the bundle that runs; None: the local config

    def save_quietly(self) -> bool:
        try:
            self.store.save(self.state)
        except CommandStoreError as exc:
            log.error("rollout_state_not_saved err=%s", exc)
            return False
        return True

    def boot(self) -> AgentConfig:
        """The configuration to start on (see the module doc)."""
        st = self.state
        if not st.unreadable:
            self.store.gc(st)  # bundles staged by a daemon that died before naming them
        if st.pinned is not None:
            log.info("config_source=local reason=pinned")
            return self.local
        p = st.probation
        if p is not None:
            p.starts += 1
            if p.starts > MAX_STARTS:
                log.error("rollout_crash_loop version=%d starts=%d", p.version, p.starts - 1)
                rolled_back(st, "crash_loop", f"{p.starts - 1} starts on version {p.version} "
                            "without passing probation", {"starts": p.starts - 1})
            self.save_quietly()
        return self._current()

    def _current(self) -> AgentConfig:
        st = self.state
        while st.current is not None:
            from edge_agent.rollout.effective import load_bundle_dir  # only with a bundle

            try:
                cfg = load_bundle_dir(self.local_path, self.store.path(st.current))
            except ConfigError as exc:
                if st.probation is None:
                    log.error("config_bundle_unloadable version=%d err=%s (the local config "
                              "runs)", st.current.version, str(exc).replace("\n", "; ")[:500])
                    break
                log.error("rollout_start_failed version=%d", st.probation.version)
                rolled_back(st, "start_failed", str(exc))
                self.save_quietly()
                continue
            self.running = st.current
            log.info("config_source=bundle version=%d state=%s", st.current.version,
                     "probation" if st.probation else "committed")
            return cfg
        self.running = None
        return self.local

    def load_running(self) -> AgentConfig:
        """What should run now (reload): the local file read again, with the current bundle
        unless pinned. ConfigError when it does not load."""
        self.local = load_config(self.local_path)
        if self.state.pinned is not None or self.state.current is None:
            return self.local
        from edge_agent.rollout.effective import load_bundle_dir

        return load_bundle_dir(self.local_path, self.store.path(self.state.current))
