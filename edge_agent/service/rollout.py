"""Configuration rollout in the daemon: bundles from ``<prefix>/<gw>/config``, staged apply,
probation, commit or automatic rollback, the technician's pin -- every decision audited (one log
line) and answered with a gateway-signed result on ``<prefix>/<gw>/config/res``.

Apply (service/rollout_apply.py, imported when the first bundle arrives): the bundle is checked
(rollout/verify.py), materialised durably in the state directory and
loaded as ``check-config`` would; then the state names it, in probation, by one atomic rename
(rollout/store.py). Without restart-only changes it runs at once through the reload path
(``Agent.swap_config``); with them the daemon stops cleanly and exits ``EXIT_RESTART``, which the
unit restarts (RestartForceExitStatus=), and the new process starts on it (rollout/source.py).
After ``window_s`` the probation verdict (rollout/probation.py) commits it or rolls back to the
last good configuration, in place or by the same controlled restart.

Messages arrive on the uplink's thread and are handed to the event loop; one bundle is handled at
a time.

A gateway that never received a bundle holds neither the bundle's code (rollout/bundle.py) nor
the results' (rollout/results.py) nor their SQLite file: both are imported, and
``rollout_results.db`` created, when there is a first result to keep; a file left by an earlier
run is opened at start (its unacknowledged results are published after the connect).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent.config.load import load_config
from edge_agent.config.model import AgentConfig
from edge_agent.errors import CommandRefused, CommandStoreError, ConfigError
from edge_agent.rollout.probation import Snapshot, evidence, judge
from edge_agent.rollout.source import ConfigSource, rolled_back
from edge_agent.rollout.store import Probation
from edge_agent.service.rollout_inventory import RolloutInventory
from edge_agent.trust.cose import sign1

if TYPE_CHECKING:
    from edge_agent.rollout.bundle import Bundle
    from edge_agent.rollout.results import MemoryResults, RolloutResult, RolloutResults
    from edge_agent.service.daemon import Agent

log = logging.getLogger("edge_agent.rollout")
audit = logging.getLogger("edge_agent.audit")

COMMIT_RETRY_S = 10.0
RESULTS_DB = "rollout_results.db"  # in the state directory


class RolloutManager(RolloutInventory):
    def __init__(self, agent: Agent, source: ConfigSource,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.agent = agent
        self.source = source
        self._loop = loop
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._probation_task: asyncio.Task[None] | None = None
        self.results_changed: Callable[[], None] = lambda: None
        cfg = agent.cfg
        # None until the first result to keep (or an earlier run's file, opened here)
        self.results: RolloutResults | MemoryResults | None = None
        if self._results_path.exists():
            self._open_results()
        self._init_inventory(cfg)

    @property
    def _results_path(self) -> Path:
        return self.agent.cfg.state_dir / RESULTS_DB

    def _open_results(self) -> RolloutResults | MemoryResults:
        """The result store, opened (created) on first use."""
        if self.results is None:
            from edge_agent.rollout.results import MemoryResults, RolloutResults

            try:
                self.results = RolloutResults(self._results_path)
            except CommandStoreError as exc:
                log.error("rollout_results_not_durable err=%s (published from memory only)", exc)
                self.results = MemoryResults()
        return self.results

    # -- wiring ----------------------------------------------------------------------------------

    def submit(self, message: bytes, retained: bool = False) -> None:
        """Thread-safe: the uplink thread hands over every message on the config topic.

        A retained bundle (``fleet rollout`` leaves one per gateway, for a box that was offline)
        comes again with every connection: once its version is passed it is ignored quietly,
        never answered or audited again. An empty message is the operator clearing it."""
        if not message:
            return
        if retained:
            from edge_agent.rollout.bundle import claimed_version

            v = claimed_version(message)
            if 0 < v <= max(self.source.state.highest_version, self._floor):
                log.debug("rollout_retained_passed version=%d", v)
                return
        self._loop.call_soon_threadsafe(self._spawn, self.handle(message))

    def _spawn(self, coro: Any) -> None:
        t = self._loop.create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    def start(self) -> None:
        """After the daemon's stages run: report what the start decided, resume probation."""
        st = self.source.state
        if st.last_result is not None and not st.last_result.get("reported", True):
            from edge_agent.rollout.results import RolloutResult

            r = st.last_result
            self._deliver(RolloutResult(
                self.agent.cfg.gateway_id, int(r["version"]), str(r["state"]), str(r["reason"]),
                int(r["t_ms"]) * 1_000_000, bytes.fromhex(r.get("kid", "")),
                bytes.fromhex(r.get("hash", "")), str(r.get("detail", "")),
                dict(r.get("evidence") or {})))
            r["reported"] = True
            self.source.save_quietly()
        if st.probation is not None and self.source.running is not None:
            self._probation_task = self._loop.create_task(self._probation(st.probation))
        self.refresh_inventory()

    def unacked(self) -> list[tuple[int, bytes]]:
        """The uplink's ``ResultSource``: signed results not yet acknowledged by the broker."""
        return [] if self.results is None else self.results.unacked()

    def acked(self, key: int) -> None:
        if self.results is not None:
            self.results.acked(key)

    def stop(self) -> None:
        """The daemon is stopping: no verdict is taken while its stages shut down (a probation
        under way resumes at the next start, counted)."""
        for t in [*self._tasks, self._probation_task]:
            if t is not None:
                t.cancel()

    def close(self) -> None:
        self.stop()
        if self.results is not None:
            self.results.close()

    # -- a bundle arrives --------------------------------------------------------------------------

    async def handle(self, message: bytes) -> RolloutResult:
        """Verify, admit and apply one bundle (service/rollout_apply.py, imported here: a
        rollout is rare, the daemon does not hold its code from the start)."""
        from edge_agent.rollout.results import RolloutResult  # the answer, whatever happens

        try:
            from edge_agent.service.rollout_apply import handle
        except Exception as exc:  # e.g. the tree upgraded in place under the running daemon
            log.exception("rollout_failed kid=-")
            detail = f"{type(exc).__name__}: {exc}"
            try:
                from edge_agent.rollout.bundle import claimed_version

                version = claimed_version(message)
            except Exception:
                version = 0
            res = RolloutResult(self.agent.cfg.gateway_id, version, "refused",
                                "internal_error", time.time_ns(), detail=detail)
            audit.info("config_audit version=%d kid=- state=refused reason=internal_error "
                       "detail=%r", res.version, detail[:300])
            self._deliver(res)
            return res
        return await handle(self, message)

    # -- probation ---------------------------------------------------------------------------------

    async def _probation(self, p: Probation) -> None:
        await asyncio.sleep(p.window_s)
        before = Snapshot(None, p.before_up, p.before_down, p.before_total)
        after = self.snapshot()
        reason = judge(before, after, p.min_up_ratio, uplink_moved=p.uplink_moved)
        ev = evidence(before, after, min_up_ratio=p.min_up_ratio, window_s=p.window_s,
                      starts=p.starts, uplink_moved=p.uplink_moved)
        async with self._lock:
            st = self.source.state
            if st.probation is not p:  # ended otherwise meanwhile (pinned)
                return
            if reason:
                await self._roll_back(reason, ev)
            else:
                await self._commit(p, ev)
            self.refresh_inventory()

    async def _commit(self, p: Probation, ev: dict[str, Any]) -> None:
        st = self.source.state
        slot = st.current
        st.last_good, st.probation = slot, None
        st.last_result = {"version": p.version, "state": "committed", "reason": "",
                          "t_ms": time.time_ns() // 1_000_000, "reported": True}
        while not self.source.save_quietly():  # still in probation on disk: try again
            await asyncio.sleep(COMMIT_RETRY_S)
        self.source.store.gc(st)
        from edge_agent.rollout.results import RolloutResult

        log.info("rollout_committed version=%d", p.version)
        audit.info("config_audit version=%d kid=%s state=committed reason=-", p.version, p.kid)
        self._deliver(RolloutResult(self.agent.cfg.gateway_id, p.version, "committed", "",
                                    time.time_ns(), bytes.fromhex(p.kid),
                                    bytes.fromhex(slot.hash if slot else ""), "", ev))

    async def _roll_back(self, reason: str, ev: dict[str, Any], detail: str = "") -> None:
        st = self.source.state
        rolled_back(st, reason, detail, ev)
        r = st.last_result or {}
        r["reported"] = True
        self.source.save_quietly()
        self.source.store.gc(st)
        from edge_agent.rollout.results import RolloutResult

        log.warning("rollout_rolled_back version=%s reason=%s up=%s/%s before=%s/%s uplink=%s",
                    r.get("version"), reason, ev.get("up"), ev.get("total"),
                    ev.get("before_up"), ev.get("before_total"), ev.get("uplink_connected"))
        audit.info("config_audit version=%s kid=%s state=rolled_back reason=%s",
                   r.get("version"), r.get("kid") or "-", reason)
        self._deliver(RolloutResult(self.agent.cfg.gateway_id, int(r.get("version", 0)),
                                    "rolled_back", reason, time.time_ns(),
                                    bytes.fromhex(r.get("kid", "")),
                                    bytes.fromhex(r.get("hash", "")), detail, ev))
        await self._switch(self._target_config(), "rollback")

    def _target_config(self) -> AgentConfig:
        try:
            return self.source.load_running()
        except ConfigError as exc:  # the last good bundle no longer loads: the local config
            log.error("config_last_good_unloadable err=%s (the local config runs)",
                      str(exc).replace("\n", "; ")[:500])
            return self.source.local

    async def _switch(self, cfg: AgentConfig, why: str) -> None:
        st = self.source.state
        self.source.running = None if st.pinned is not None else st.current
        restart = self.agent.restart_fields(cfg)
        if restart:
            self.agent.request_restart(why)
        else:
            await self.agent.swap_config(cfg)

    # -- the technician's pin ----------------------------------------------------------------------

    async def pin(self, pinned: bool, reason: str = "") -> dict[str, Any]:
        """Pin: the local agent.toml runs and bundles are declined; unpin: the last good bundle
        runs again (or the local config, when there is none). CommandRefused('config_invalid')
        when the configuration to switch to does not load."""
        async with self._lock:
            st = self.source.state
            if pinned == (st.pinned is not None):
                return self.config_state()
            try:
                target = load_config(self.source.local_path) if pinned else None
            except ConfigError as exc:
                raise CommandRefused("config_invalid",
                                     "; ".join(map(str, exc.problems))[:2000]) from None
            saved = (st.pinned, st.current, st.probation, st.last_result)
            abandoned = self._abandon_probation() if pinned else None
            st.pinned = {"at_ms": time.time_ns() // 1_000_000, "reason": reason[:200]} \
                if pinned else None
            if not self.source.save_quietly():
                st.pinned, st.current, st.probation, st.last_result = saved
                raise CommandRefused("state_unwritable", "the pin could not be recorded")
            if abandoned is not None:
                if self._probation_task is not None:
                    self._probation_task.cancel()
                self._deliver(abandoned)
            audit.info("config_audit pinned=%s reason=%r", str(pinned).lower(), reason[:200])
            if target is None:
                target = self._target_config()
            else:
                self.source.local = target
            await self._switch(target, "pin" if pinned else "unpin")
            self.refresh_inventory()
            return self.config_state()

    def _abandon_probation(self) -> RolloutResult | None:
        """Pinned during probation: the bundle is rolled back (in the state, not saved yet)."""
        st = self.source.state
        p = st.probation
        if p is None:
            return None
        from edge_agent.rollout.results import RolloutResult

        ev = evidence(Snapshot(None, p.before_up, p.before_down, p.before_total),
                      self.snapshot(), min_up_ratio=p.min_up_ratio, window_s=p.window_s,
                      starts=p.starts)
        rolled_back(st, "pinned", "a technician pinned the local config during probation", ev)
        r = st.last_result or {}
        r["reported"] = True
        return RolloutResult(self.agent.cfg.gateway_id, p.version, "rolled_back", "pinned",
                             time.time_ns(), bytes.fromhex(p.kid),
                             bytes.fromhex(r.get("hash", "")), r.get("detail", ""), ev)

    # -- results and inventory ---------------------------------------------------------------------

    def _result(self, b: Bundle | None, kid: bytes, state: str, reason: str,
                detail: str = "") -> RolloutResult:
        from edge_agent.rollout.results import RolloutResult

        return RolloutResult(self.agent.cfg.gateway_id, b.version if b else 0, state, reason,
                             time.time_ns(), kid, b.hash if b else b"", detail)

    def _deliver(self, res: RolloutResult) -> None:
        """Sign, keep (the store opened, created, on the first result) and have it published."""
        from edge_agent.rollout.results import MemoryResults, encode_result

        cose = sign1(encode_result(res), self.agent.key, self.agent.signer.kid)
        try:
            self._open_results().add(res, cose)
        except CommandStoreError as exc:
            log.warning("rollout_result_not_stored version=%d err=%s (from memory)",
                        res.version, exc)
            memory = MemoryResults()
            memory.add(res, cose)
            self.results = memory
        self.results_changed()
