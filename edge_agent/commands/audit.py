"""Every command decision is audited: one log line, and a gateway-signed result message."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import cbor2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.commands.execute import CommandExecutor
from edge_agent.commands.model import Command, Result, encode_result
from edge_agent.commands.verify import CommandVerifier
from edge_agent.errors import CommandRefused
from edge_agent.trust.cose import sign1

log = logging.getLogger("edge_agent.audit")


def _best_effort_id(message: bytes) -> bytes:
    """The command id for correlating a refusal, read without trusting anything else."""
    try:
        from edge_agent.trust.cose import parse1

        payload = parse1(message)[2]
        m = cbor2.loads(payload)
        cid = m.get(2) if isinstance(m, dict) else None
        return cid if isinstance(cid, bytes) and len(cid) <= 64 else b""
    except Exception:  # anything unparseable simply has no id to echo
        return b""


@dataclass
class CommandService:
    """verify → execute → audit. ``publish_result`` gets the signed result (COSE bytes)."""

    verifier: CommandVerifier
    executor: CommandExecutor
    key: Ed25519PrivateKey
    kid: bytes
    gateway_id: str
    publish_result: Callable[[bytes], None]
    recent: deque[Result] = field(default_factory=lambda: deque(maxlen=50))

    async def handle(self, message: bytes) -> Result:
        cmd: Command | None = None
        kid = b""
        try:
            verified = self.verifier.verify(message)
            cmd, kid = verified.command, verified.kid
            value = await self.executor.execute(cmd)
            res = Result(cmd.id, self.gateway_id, True, "", time.time_ns(), kid, value)
        except CommandRefused as exc:
            cid = cmd.id if cmd is not None else _best_effort_id(message)
            res = Result(cid, self.gateway_id, False, exc.reason, time.time_ns(), kid, None)
            detail = exc.detail
        else:
            detail = ""
        log.info(
            "command_audit id=%s kid=%s action=%s device=%s point=%s accepted=%s reason=%s%s",
            res.id.hex() or "-", kid.hex() or "-", cmd.action if cmd else "-",
            (cmd.device or "-") if cmd else "-", (cmd.point or "-") if cmd else "-",
            str(res.ok).lower(), res.reason or "-", f" detail={detail!r}" if detail else "",
        )
        self.recent.append(res)
        self.publish_result(sign1(encode_result(res), self.key, self.kid))
        return res
