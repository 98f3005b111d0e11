"""What a gateway says about its configuration (service/rollout.py's ``RolloutManager`` is one):
``config_state`` (`config show`, the status' ``config``), the retained status' inventory (tags,
devices up/total, clock), and -- when state.json was lost -- the anti-rollback recovered from the
gateway's own retained status (``recover``, from the uplink thread)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from edge_agent.config.model import AgentConfig
from edge_agent.rollout.facts import addressing, highest_in_status
from edge_agent.rollout.probation import Snapshot, device_snapshot
from edge_agent.rollout.source import ConfigSource, describe

if TYPE_CHECKING:
    from edge_agent.service.daemon import Agent

log = logging.getLogger("edge_agent.rollout")


class RolloutInventory:
    agent: Agent
    source: ConfigSource
    _loop: asyncio.AbstractEventLoop

    def _init_inventory(self, cfg: AgentConfig) -> None:
        self._described: dict[str, Any] = describe(cfg)
        self._described_for: AgentConfig = cfg
        self._addressed: tuple[str, dict[str, Any]] = ("", {})  # (slot dir, its addressing)
        self.inventory: dict[str, Any] = {}
        self._floor = 0  # highest version known from the retained status (state.json lost)
        try:  # the uplink's first last will carries it already (tags, config version)
            self.refresh_inventory()
        except Exception as exc:  # pragma: no cover - the status goes without it until the loop
            log.debug("rollout_inventory_deferred err=%r", exc)

    # -- a lost state.json ------------------------------------------------------------------------

    def recover(self, status: bytes | None) -> None:
        """Uplink thread, once, when state.json could not be read: this gateway's own retained
        status (as the broker kept it; None: none) says the highest version it admitted. The
        anti-rollback goes on from the higher of that and the bundle directories on disk; the
        status it publishes next says so too (never a lower figure over the retained one)."""
        retained = highest_in_status(status)
        self._floor = max(self._floor, retained)
        inv = dict(self.inventory)
        cfg = dict(inv.get("config") or {})
        cfg["highest_version"] = max(int(cfg.get("highest_version") or 0), retained)
        inv["config"] = cfg
        self.inventory = inv  # the birth status carries it
        self._loop.call_soon_threadsafe(self._recovered, retained, status is not None)

    def _recovered(self, retained: int, had_status: bool) -> None:
        st = self.source.state
        disk = st.highest_version
        st.highest_version = max(disk, retained)
        why = st.unreadable or "unreadable"
        moved = self.source.store.set_aside_damaged()
        st.unreadable = ""
        saved = self.source.save_quietly()
        log.warning("rollout_state_recovered highest_version=%d retained_status=%s "
                    "bundle_dirs=%d damaged=%r kept_as=%s saved=%s (versions at or below are "
                    "refused)", st.highest_version, retained if had_status else "none", disk,
                    why[:200], moved or "-", str(saved).lower())
        self.refresh_inventory()

    def snapshot(self) -> Snapshot:
        poller, up = self.agent.poller, self.agent.uplink
        devs = poller.health_view() if poller is not None else {}
        if up is None:
            return device_snapshot(devs, len(self.agent.cfg.devices), None)
        return device_snapshot(devs, len(self.agent.cfg.devices), up.stats.connected,
                               up.stats.acked, up.stats.config_subscribed, up.stats.sessions)

    def config_state(self) -> dict[str, Any]:
        """What `config show` prints for the running gateway and the status topic carries."""
        cfg, st, running = self.agent.cfg, self.source.state, self.source.running
        if self._described_for is not cfg:
            self._described, self._described_for = describe(cfg), cfg
        last = None
        if st.last_result is not None:
            last = {k: st.last_result.get(k) for k in ("version", "state", "reason", "t_ms")}
        return {
            "version": running.version if running else 0,
            "source": "bundle" if running else "local",
            "state": "probation" if st.probation is not None and running else "committed",
            "hash": self._described["hash"], "profiles": self._described["profiles"],
            "pinned": st.pinned is not None,
            "pin_reason": (st.pinned or {}).get("reason", ""),
            "highest_version": max(st.highest_version, self._floor),
            "addressed": self._addressing(),
            "last_rollout": last,
        }

    def _addressing(self) -> dict[str, Any]:
        """Whom the running bundle addresses (``fleet status`` judges "behind" by it)."""
        running = self.source.running
        if running is None:
            return {}
        if self._addressed[0] != running.dir:
            self._addressed = (running.dir, addressing(self.source.store.path(running)))
        return self._addressed[1]

    def refresh_inventory(self) -> None:
        """The retained status' inventory, computed on the event loop (the uplink thread only
        reads the finished dict)."""
        snap = self.snapshot()
        clock = self.agent.clock.state()
        self.inventory = {
            "config": self.config_state(),  # the pin's reason too: the operators see why
            "tags": dict(self.source.local.rollout_tags),
            "devices": {"up": snap.up, "down": snap.down, "total": snap.total},
            "clock": {"synced": clock.synced, "source": self.agent.clock.source},
        }

    async def run_inventory(self, interval_s: float = 1.0) -> None:
        while True:
            with contextlib.suppress(Exception):
                self.refresh_inventory()
            await asyncio.sleep(interval_s)
