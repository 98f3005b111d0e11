"""Remote commands in the daemon: allowlist from the operators directory, replay store and durable
results in the state directory (``commands.db``, ``command_results.db``), results published through
the uplink until the broker acknowledged them. Messages arrive on the uplink's thread and are handed
to the event loop, where they run through the poller's write path like any other write.

A state file that cannot be opened never stops the daemon: without the replay store every command
is refused ``replay_store_unavailable`` (audited, answered); without the result store results are
published from memory only (lost on a restart before the broker acknowledged them).

Loaded on first use, not at start (issue #15's memory): a gateway without operator keys never
imports the command modules; one with keys opens its two stores at start (the uplink publishes
stored results after every connect) and imports the verifier, the executor and the audit only
when the first command arrives."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent.errors import CommandRefused, CommandStoreError, KeyFileError
from edge_agent.trust.ed25519 import PublicKey
from edge_agent.trust.keys import kid_of, load_public_key

if TYPE_CHECKING:
    from edge_agent.commands.audit import CommandService
    from edge_agent.commands.replay import ReplayGuard
    from edge_agent.commands.results import ResultStore
    from edge_agent.service.daemon import Agent

log = logging.getLogger(__name__)


def load_allowlist(directory: Path | None) -> dict[bytes, PublicKey]:
    keys: dict[bytes, PublicKey] = {}
    if directory is None or not directory.is_dir():
        return keys
    for f in sorted(directory.iterdir()):
        if f.suffix not in (".pem", ".pub"):
            continue
        try:
            pub = load_public_key(f)
        except KeyFileError as exc:
            log.warning("operator_key_skipped file=%s err=%s", f, exc)
            continue
        keys[kid_of(pub)] = pub
    return keys


class RemoteCommands:
    """The daemon's side of remote commands: the replay guard and the result store, open from
    the start; the verify → execute → audit service (``make_service``) built for the first
    command that arrives."""

    def __init__(self, make_service: Callable[[RemoteCommands], CommandService],
                 unbuilt: Callable[[RemoteCommands, bytes, Exception], None],
                 guard: ReplayGuard, results: ResultStore | None,
                 loop: asyncio.AbstractEventLoop) -> None:
        self._make_service = make_service
        self._unbuilt = unbuilt
        self._service: CommandService | None = None
        self._guard = guard
        self.results = results
        self._loop = loop
        self._tasks: set[asyncio.Task[Any]] = set()
        # set by the daemon once the uplink runs; the service calls whatever is set then
        self.publish_result: Callable[[bytes], None] = lambda b: None
        self.results_changed: Callable[[], None] = lambda: None

    @property
    def service(self) -> CommandService:
        if self._service is None:
            self._service = self._make_service(self)
        return self._service

    def submit(self, message: bytes) -> None:
        """Thread-safe: called by the uplink thread for every message on the command topic."""
        self._loop.call_soon_threadsafe(self._start, message)

    def _start(self, message: bytes) -> None:
        try:
            service = self.service
        except Exception as exc:  # its modules failed to load: answered all the same
            self._unbuilt(self, message, exc)
            return
        t = self._loop.create_task(service.handle(message))
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        self._guard.close()
        if self.results is not None:
            self.results.close()


def build_command_service(agent: Agent, loop: asyncio.AbstractEventLoop) -> RemoteCommands | None:
    cfg = agent.cfg
    allow = load_allowlist(cfg.keys.command_keys)
    if not allow:
        log.info("remote_commands_disabled reason=no_operator_keys dir=%s", cfg.keys.command_keys)
        return None
    from edge_agent.commands.replay import ReplayGuard
    from edge_agent.commands.results import ResultStore

    guard = ReplayGuard(cfg.state_dir / "commands.db")
    try:
        results: ResultStore | None = ResultStore(cfg.state_dir / "command_results.db")
    except CommandStoreError as exc:
        log.error("command_results_not_durable err=%s (results published from memory only)", exc)
        results = None

    def make_service(remote: RemoteCommands) -> CommandService:
        from edge_agent.commands.audit import CommandService
        from edge_agent.commands.execute import CommandExecutor
        from edge_agent.commands.verify import CommandVerifier

        verifier = CommandVerifier(
            allow, cfg.gateway_id, guard,
            clock_synced=(lambda: True) if cfg.commands_allow_unsynced_clock
            else (lambda: agent.clock.state().synced),
        )
        executor = CommandExecutor(lambda: agent.cfg, agent, agent.reload)
        return CommandService(verifier, executor, agent.key, agent.signer.kid, cfg.gateway_id,
                              publish_result=lambda b: remote.publish_result(b),
                              results=results,
                              results_changed=lambda: remote.results_changed())

    def unbuilt(remote: RemoteCommands, message: bytes, exc: Exception) -> None:
        """The command service could not be built: its modules, imported at the first command,
        failed to load (e.g. a tree upgraded in place under the running daemon, which then
        holds modules of two versions). The message still gets its audit line and one signed
        refusal, made of what the daemon loaded at start; the next command tries again."""
        from edge_agent.commands.model import Result, best_effort_id, encode_result
        from edge_agent.commands.results import deliver_result
        from edge_agent.trust.cose import sign1

        log.error("command_service_unavailable err=%s: %s", type(exc).__name__, exc)
        res = Result(best_effort_id(message), cfg.gateway_id, False, "internal_error",
                     time.time_ns(), b"", None)
        logging.getLogger("edge_agent.audit").info(
            "command_audit id=%s kid=- action=- device=- point=- accepted=false "
            "reason=internal_error detail=%r", res.id.hex() or "-",
            f"{type(exc).__name__}: {exc}"[:300])
        deliver_result(remote.results, res, sign1(encode_result(res), agent.key, agent.signer.kid),
                       lambda: remote.results_changed(), lambda b: remote.publish_result(b))

    log.info("remote_commands_enabled operators=%d", len(allow))
    return RemoteCommands(make_service, unbuilt, guard, results, loop)


def stored_results(commands: RemoteCommands | None, cmd_id: str | None,
                   recent: int) -> list[dict[str, Any]]:
    """What ``command_results`` on the control socket answers (see ``Agent.command_results``)."""
    store = commands.results if commands is not None else None
    if store is None:
        why = ("remote commands are disabled (no operator keys)" if commands is None
               else "the result store could not be opened (see the log)")
        raise CommandRefused("no_result_store", why)
    if cmd_id is not None:
        try:
            raw = bytes.fromhex(cmd_id)
        except ValueError:
            raise CommandRefused("bad_argument", f"id {cmd_id[:80]!r} is not hex") from None
        return [s.json() for s in store.find(raw)]
    from edge_agent.commands.results import MAX_COUNT

    return [s.json() for s in store.recent(max(1, min(recent, MAX_COUNT)))]
