"""Every command decision is audited: one log line, and a gateway-signed result message."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from edge_agent.commands.execute import CommandExecutor
from edge_agent.commands.model import Command, Result, best_effort_id, encode_result
from edge_agent.commands.results import ResultStore, deliver_result
from edge_agent.commands.verify import CommandVerifier
from edge_agent.errors import CommandRefused
from edge_agent.trust.cose import sign1
from edge_agent.trust.ed25519 import PrivateKey

log = logging.getLogger("edge_agent.audit")


@dataclass
class CommandService:
    """verify → execute → audit → store → publish.

    Every message gets exactly one audit line and one gateway-signed result, whatever happens
    (a refusal, a broken replay store, a bug in a handler). The audit line names the signer
    (``kid``) of every decision taken after the signature held; before that it is ``-``.
    The signed result goes to ``results`` (durable, published by the uplink until the broker
    acknowledged it) and ``results_changed`` is called; without a store, or when storing fails,
    it is handed to ``publish_result`` (memory only) instead."""

    verifier: CommandVerifier
    executor: CommandExecutor
    key: PrivateKey
    kid: bytes
    gateway_id: str
    publish_result: Callable[[bytes], None]
    results: ResultStore | None = None
    results_changed: Callable[[], None] = field(default=lambda: None)

    async def handle(self, message: bytes) -> Result:
        cmd: Command | None = None
        kid = b""
        detail = ""
        try:
            auth = self.verifier.authenticate(message)
            kid = auth.kid  # from here on every decision is the signer's
            cmd = self.verifier.decode(auth)
            self.verifier.admit(kid, cmd)
            value = await self.executor.execute(cmd)
            res = Result(cmd.id, self.gateway_id, True, "", time.time_ns(), kid, value)
        except CommandRefused as exc:
            res = self._refused(message, cmd, kid, exc.reason)
            detail = exc.detail
        except Exception as exc:  # a bug must not leave a command unanswered
            log.exception("command_failed kid=%s", kid.hex() or "-")
            res = self._refused(message, cmd, kid, "internal_error")
            detail = f"{type(exc).__name__}: {exc}"
        log.info(
            "command_audit id=%s kid=%s action=%s device=%s point=%s accepted=%s reason=%s%s",
            res.id.hex() or "-", kid.hex() or "-", cmd.action if cmd else "-",
            (cmd.device or "-") if cmd else "-", (cmd.point or "-") if cmd else "-",
            str(res.ok).lower(), res.reason or "-", f" detail={detail!r}" if detail else "",
        )
        self._deliver(res, sign1(encode_result(res), self.key, self.kid))
        return res

    def _refused(self, message: bytes, cmd: Command | None, kid: bytes, reason: str) -> Result:
        cid = cmd.id if cmd is not None else best_effort_id(message)
        return Result(cid, self.gateway_id, False, reason, time.time_ns(), kid, None)

    def _deliver(self, res: Result, cose: bytes) -> None:
        deliver_result(self.results, res, cose, self.results_changed, self.publish_result)
