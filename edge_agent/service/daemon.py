"""The running agent: wires profiles → bus → poll → batch → sign → outbox → uplink, plus the
command back-channel and the control socket, under one asyncio loop.

Life cycle (systemd Type=notify): READY=1 once the config is loaded and the outbox is open;
WATCHDOG=1 from the main loop only while the poller, the batcher and the uplink are alive.
SIGTERM/SIGINT: stop polling, flush the open batch into the outbox, publish "offline", exit.
SIGHUP: validate the new config; apply it when valid (buses, devices, profiles), else keep the
running one and log why. Which config runs -- the local agent.toml or a signed configuration
bundle merged with its local settings -- is decided by rollout/source.py; bundles arrive through
service/rollout.py, which may end the daemon with ``EXIT_RESTART`` for the unit to restart it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent.config.model import AgentConfig
from edge_agent.control.server import ControlServer
from edge_agent.errors import CommandRefused, ConfigError, OutboxError
from edge_agent.outbox import epochs
from edge_agent.outbox.epochs import Epoch
from edge_agent.outbox.rechain import ChainGuard
from edge_agent.outbox.store import Outbox
from edge_agent.outbox.writer import SigningWriter, make_gap_signer
from edge_agent.pipeline.batcher import Batcher
from edge_agent.platform.clock import ClockProbe
from edge_agent.platform.notify import Notifier
from edge_agent.platform.runtime import log_settled, settle
from edge_agent.poll.engine import Poller
from edge_agent.readings import Reading, Value
from edge_agent.rollout.source import ConfigSource
from edge_agent.service.buses import make_buses
from edge_agent.service.commands import build_command_service, stored_results
from edge_agent.service.health import watchdog_loop
from edge_agent.service.poller_stop import stop_poller
from edge_agent.service.rollout import RolloutManager
from edge_agent.service.status import agent_status, device_rows
from edge_agent.trust.batch import BatchSigner
from edge_agent.trust.ed25519 import libcrypto
from edge_agent.trust.keys import load_signing_key
from edge_agent.uplink.mqtt import MqttUplink

if TYPE_CHECKING:
    from edge_agent.service.commands import RemoteCommands

log = logging.getLogger("edge_agent")

RESTART_ONLY = ("gateway_id", "uplink", "outbox", "keys", "batch", "state_dir", "runtime_dir")
STOP_BUDGET_S = 15.0
# a controlled restart (a configuration change that needs one): the unit restarts on it
# (systemd/edge-agent.service: RestartForceExitStatus=75, SuccessExitStatus=75)
EXIT_RESTART = 75


class Agent:
    def __init__(self, config_path: Path, *, notifier: Notifier | None = None) -> None:
        self.config_path = config_path
        self.notifier = notifier or Notifier()
        self.source = ConfigSource(config_path)  # ConfigError (local config): refuse to start
        self.cfg: AgentConfig = self.source.boot()  # the local config or the current bundle
        for warning in self.cfg.warnings:  # accepted but unsafe (insecure_plaintext...)
            log.warning("config_warning %s", warning)
        self.key = load_signing_key(self.cfg.keys.signing_key)  # KeyFileError: refuse to start
        self.clock = ClockProbe()
        self.started_mono = time.monotonic()
        self.signer = BatchSigner(self.key, self.cfg.gateway_id, self.clock.boot_id)
        self.outbox = Outbox(self.cfg.outbox.path, cap_bytes=self.cfg.outbox.cap_bytes,
                             gap_signer=make_gap_signer(self.signer),
                             reserve_bytes=self.cfg.outbox.reserve_bytes)
        # this run's epoch, durably, before anything is published (anti-rollback: the witness
        # names it; the previous one tells whether the last run stopped cleanly)
        self.previous_run = epochs.start(self.outbox, self.clock.boot_id)
        writer = SigningWriter(self.signer, self.outbox)
        if self.previous_run is not None and not self.previous_run.clean:
            self._announce_unclean_stop(writer, self.previous_run)
        self.batcher = Batcher(self.cfg.batch, writer, on_loss=lambda loss: writer.commit_loss(
            loss, clock_synced=self.clock.state().synced))
        self._sink_refused = False
        self.uplink: MqttUplink | None = None
        self.commands: RemoteCommands | None = None
        self.buses: dict[str, Any] = {}
        self.poller: Poller | None = None
        self._poll_task: asyncio.Task[None] | None = None
        self._poll_crash: BaseException | None = None  # the poller ended on its own, with this
        self._stop = asyncio.Event()
        self._subscribers: set[asyncio.Queue[Reading]] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.last_errors: list[str] = []
        self.control: ControlServer | None = None
        self.rollout: RolloutManager | None = None
        self.exit_code = 0

    def _announce_unclean_stop(self, writer: SigningWriter, prev: Epoch) -> None:
        """The run before ended without its clean stop (kill -9, the watchdog, a power cut):
        what it held in memory is gone, uncounted. Signed first thing, so the notice follows the
        last batch that run committed; OutboxError (the disk fails): the start fails."""
        b = writer.commit_unclean_stop(prev.started_ns, [d.name for d in self.cfg.devices],
                                       clock_synced=self.clock.state().synced)  # fmt: skip
        log.warning("unclean_stop previous_boot=%s previous_start_seq=%d last_seq=%d "
                    "notice_seq=%d (readings the previous run had not committed are lost: "
                    "announced in a signed loss notice)", prev.boot, prev.start, b.seq - 1,
                    b.seq)  # fmt: skip

    # -- readings fan-out --------------------------------------------------------------------

    def _sink(self, reading: Reading) -> None:
        try:
            self.batcher.add(reading)
        except OutboxError as exc:  # dead worker: the watchdog is withheld, say it once here
            if not self._sink_refused:
                self._sink_refused = True
                log.error("readings_refused err=%s", exc)
        for q in self._subscribers:
            if q.qsize() < q.maxsize:
                q.put_nowait(reading)

    def _sink_many(self, readings: list[Reading]) -> None:
        """A poll job's readings: one hand-over to the batcher (one lock) for all of them."""
        try:
            self.batcher.add_many(readings)
        except OutboxError as exc:
            if not self._sink_refused:
                self._sink_refused = True
                log.error("readings_refused err=%s", exc)
        for q in self._subscribers:
            for reading in readings:
                if q.qsize() < q.maxsize:
                    q.put_nowait(reading)

    async def subscribe(self) -> AsyncIterator[Reading]:
        q: asyncio.Queue[Reading] = asyncio.Queue(maxsize=1000)
        self._subscribers.add(q)
        try:
            while True:
                yield await q.get()
        finally:
            self._subscribers.discard(q)

    # -- control target ------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return agent_status(self)

    def devices(self) -> list[dict[str, Any]]:
        return device_rows(self)

    # what only a technician's request needs (the catalog, raw Modbus, an export) is imported
    # when asked, not at start: the daemon does not hold that code while nobody asks

    def catalog(self) -> dict[str, Any]:
        from edge_agent.config.catalog import catalog

        return catalog(self.cfg)

    async def modbus(self, bus: str, unit: int, table: str, address: int, count: int | None,
                     values: list[int] | None, timeout: float | None,
                     probe: bool) -> dict[str, Any]:
        from edge_agent.service.commissioning import raw_modbus

        return await raw_modbus(self, bus, unit, table, address, count, values, timeout, probe)

    async def read_now(self, device: str, point: str | None = None) -> dict[str, Value]:
        if self.poller is None:
            raise CommandRefused("not_running", "poller not started")
        return await self.poller.read_now(device, point)

    async def read_judged(self, device: str, point: str | None = None) -> dict[str, Any]:
        """``read_now`` with the poller's own verdict: {point: {value, quality, reason}}."""
        if self.poller is None:
            raise CommandRefused("not_running", "poller not started")
        got = await self.poller.read_judged(device, point)
        return {k: {"value": v, "quality": q.value, "reason": r} for k, (v, q, r) in got.items()}

    async def write(self, device: str, point: str, value: Value) -> Value:
        if self.poller is None:
            raise CommandRefused("not_running", "poller not started")
        return await self.poller.write(device, point, value)

    async def local_write(self, device: str, point: str, value: Value) -> Value:
        confirmed = await self.write(device, point, value)
        log.info("local_write_audit device=%s point=%s value=%r confirmed=%r", device, point,
                 value, confirmed)
        return confirmed

    def buffer_stats(self) -> dict[str, Any]:
        s = self.outbox.stats()
        return {k: getattr(s, k) for k in s.__dataclass_fields__} | {
            "written_per_reading": round(s.written_per_reading, 1)}

    def export(self, after_seq: int = 0) -> AsyncIterator[dict[str, Any]]:
        from edge_agent.service.export import export_stream

        return export_stream(self.outbox, self.cfg.gateway_id, after_seq)

    def command_results(self, cmd_id: str | None, recent: int = 20) -> list[dict[str, Any]]:
        """Stored signed results of remote commands: every one for ``cmd_id`` (hex), else the
        newest ``recent`` (1..1000). CommandRefused when there is no store to ask."""
        return stored_results(self.commands, cmd_id, recent)

    def config_state(self) -> dict[str, Any]:
        if self.rollout is None:
            raise CommandRefused("not_running", "the daemon is starting")
        return self.rollout.config_state()

    async def config_pin(self, pin: bool, reason: str = "") -> dict[str, Any]:
        if self.rollout is None:
            raise CommandRefused("not_running", "the daemon is starting")
        return await self.rollout.pin(pin, reason)

    # -- life cycle ------------------------------------------------------------------------------

    def _start_poller(self) -> None:
        self.buses = make_buses(self.cfg)
        self.poller = Poller(self.cfg, self.buses, self._sink, clock=self.clock,
                             sink_many=self._sink_many)
        self._poll_task = asyncio.create_task(self.poller.run(), name="poller")
        self._poll_task.add_done_callback(self._poller_ended)

    def _poller_ended(self, task: asyncio.Task[None]) -> None:
        """A poller that crashes stops the agent (exit 1): noticed when it happens, no polling
        loop. One stopped on purpose (reload, shutdown) is no longer ``_poll_task`` by then or
        ended without an exception."""
        if task is self._poll_task and not task.cancelled() and task.exception() is not None:
            self._poll_crash = task.exception()
            self._stop.set()

    async def _stop_poller(self, during: str = "reload", **bounds: float) -> bool:
        """False: its task did not end, even cancelled (service/poller_stop.py)."""
        task, self._poll_task = self._poll_task, None  # ending now is no crash
        poller, buses, self.poller, self.buses = self.poller, self.buses, None, {}
        return await stop_poller(task, poller, buses, during=during, **bounds)

    async def reload(self) -> str:
        """Apply a changed config (buses, devices, profiles, commands, health) or refuse it whole.

        Sections bound to the identity and the durable state (gateway_id, uplink, outbox, keys,
        batch, state/runtime dirs) need a restart: a reload that changes them is refused and the
        running config is kept, so what `status` shows is always what runs."""
        self.notifier.reloading()
        try:
            try:
                new = self.source.load_running()
            except ConfigError as exc:
                for p in exc.problems:
                    log.warning("config_reload_problem %s", p)
                log.warning("config_reload_rejected problems=%d keeping=running_config",
                            len(exc.problems))
                raise CommandRefused("reload_failed", "; ".join(map(str, exc.problems))) from None
            fixed = self.restart_fields(new)
            if fixed:
                log.warning("config_reload_rejected needs_restart=%s keeping=running_config",
                            ",".join(fixed))
                raise CommandRefused("reload_failed",
                                     f"restart needed to change {', '.join(fixed)}")
            return "reloaded" if await self.swap_config(new) else "restarting"
        finally:
            self.notifier.ready("running")

    def restart_fields(self, new: AgentConfig) -> list[str]:
        """The sections of ``new`` that differ from the running config and need a restart."""
        return [k for k in RESTART_ONLY if getattr(new, k) != getattr(self.cfg, k)]

    async def swap_config(self, new: AgentConfig) -> bool:
        """Run ``new`` in place (the reload path: buses, devices, profiles). False: the old
        poller did not stop, and a restart (on what the caller made the running config) is
        requested instead."""
        if not await self._stop_poller():
            self.request_restart("poller_stop_stuck")
            return False
        self.cfg = new
        self._start_poller()
        log.info("config_reloaded devices=%d buses=%d", len(new.devices), len(new.buses))
        log_settled(settle(), "reloaded")
        return True

    def request_restart(self, why: str) -> None:
        """Stop cleanly and exit ``EXIT_RESTART``: the unit starts the daemon again."""
        log.warning("restart_requested why=%s exit=%d", why, EXIT_RESTART)
        self.exit_code = EXIT_RESTART
        self._stop.set()

    def _spawn(self, coro: Any) -> None:
        t = asyncio.create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    @property
    def poll_task(self) -> asyncio.Task[None] | None:
        return self._poll_task

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._stop.set)
        loop.add_signal_handler(signal.SIGINT, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: self._spawn(self._reload_quietly()))
        try:
            self.commands = build_command_service(self, loop)
            self.rollout = RolloutManager(self, self.source, loop)
            if self.cfg.uplink is not None:
                self.uplink = MqttUplink(
                    self.cfg.uplink, self.cfg.gateway_id, self.outbox,
                    boot_id=self.clock.boot_id,
                    on_command=self.commands.submit if self.commands else None,
                    guard=ChainGuard(self.outbox, self.signer, self.key,
                                     clock_synced=lambda: self.clock.state().synced),
                    results=self.commands.results if self.commands else None,
                    on_config=self.rollout.submit, config_results=self.rollout,
                    inventory=lambda: self.rollout.inventory if self.rollout else {},
                    recover=self.rollout.recover if self.source.state.unreadable else None)
                self.rollout.results_changed = self.uplink.wake
                self.uplink.start()
                if self.commands is not None:
                    self.commands.publish_result = self.uplink.publish_result
                    self.commands.results_changed = self.uplink.wake
            self.control = ControlServer(self.cfg.runtime_dir / "control.sock", self,
                                         group="edge-agent")
            await self.control.start()
            self._start_poller()
            self.notifier.ready(f"polling {len(self.cfg.devices)} devices")
            log.info("agent_started gateway=%s devices=%d boot_id=%s ed25519=%s",
                     self.cfg.gateway_id, len(self.cfg.devices), self.clock.boot_id,
                     "cryptography" if libcrypto() is None else "libcrypto")
            log_settled(settle(), "started")  # start-up's objects out of the collector's way
            self._spawn(watchdog_loop(self))
            self.rollout.start()
            if self.cfg.uplink is not None:  # the retained status' inventory: only it reads
                # it, once a status interval; a fresher copy 4x as often (not every second: a
                # thousand devices' status is the costliest thing a quiet gateway would do)
                self._spawn(self.rollout.run_inventory(self.cfg.uplink.status_interval_s / 4))
            if self.cfg.prometheus_textfile is not None:
                from edge_agent.service.metrics import metrics_loop

                self._spawn(metrics_loop(self, self.cfg.prometheus_textfile))
            await self._stop.wait()  # a signal, a restart request or the poller crashing
            if self._poll_crash is not None:
                log.error("poller_crashed err=%r", self._poll_crash)
                return 1
            return self.exit_code
        finally:
            await self.shutdown()

    async def _reload_quietly(self) -> None:
        with contextlib.suppress(CommandRefused):
            await self.reload()

    async def shutdown(self) -> None:
        """Stop within the unit's TimeoutStopSec (20 s): every stage gets a share of a 15 s
        budget, and a stage that fails or overruns never keeps the next one from closing."""
        self.notifier.stopping()
        log.info("agent_stopping")
        deadline = time.monotonic() + STOP_BUDGET_S

        def left(share: float) -> float:
            return max(0.5, min(share, deadline - time.monotonic()))

        if self.rollout is not None:
            self.rollout.stop()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        steps: list[tuple[str, Any]] = [
            ("poller", lambda: self._stop_poller("shutdown", grace_s=left(1.5), cancel_s=0.5,
                                                 close_s=1.0)),
            # flush the batch being formed into the outbox: accepted = committed
            ("batcher", lambda: asyncio.to_thread(self.batcher.close, left(8.0))),
            # publishes the retained "offline" status
            ("uplink", lambda: asyncio.to_thread(self.uplink.stop, left(3.0))
             if self.uplink is not None else asyncio.sleep(0)),
            ("control", lambda: self.control.stop() if self.control is not None
             else asyncio.sleep(0)),
        ]
        for name, step in steps:
            try:
                await step()
            except Exception as exc:  # keep closing the rest; say what did not stop cleanly
                log.error("stop_step_failed step=%s err=%r", name, exc)
        if self.commands is not None:
            self.commands.close()
        if self.rollout is not None:
            self.rollout.close()
        if self.batcher.closed_clean:  # else the next start announces an unclean stop
            try:
                epochs.stopped_clean(self.outbox)
            except OutboxError as exc:
                log.error("stop_step_failed step=clean_mark err=%s", exc)
        self.outbox.close()
        self.notifier.close()
        log.info("agent_stopped")
