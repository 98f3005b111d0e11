"""Checks a signed command before anything runs. Every refusal has a short reason code:

    malformed, wrong_alg, unknown_kid, bad_signature, wrong_gateway, expired, not_yet_valid,
    ttl_too_long, clock_unsynced, replayed_id, replayed_counter, replay_store_unavailable

(then, in execute.py: unknown_device, unknown_point, not_writable, out_of_bounds, device_error).
Checks run cheapest-first and nothing is recorded before the signature holds, so an attacker
without a key cannot burn counters or fill the replay store. Three steps, so the caller knows the
signer (``authenticate``) and the command (``decode``) of every later refusal (``admit``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from edge_agent.commands.model import Command, decode_command
from edge_agent.commands.replay import ReplayGuard
from edge_agent.errors import CommandRefused, VerifyError, WrongAlgorithm
from edge_agent.trust.cose import parse1, sig_structure
from edge_agent.trust.ed25519 import PublicKey, verified


@dataclass(frozen=True, slots=True)
class VerifiedCommand:
    kid: bytes
    command: Command


@dataclass(frozen=True, slots=True)
class Authenticated:
    """A message whose signature holds under an allowlisted key: from here on, every refusal
    names the signer (``kid``)."""

    kid: bytes
    payload: bytes


class CommandVerifier:
    def __init__(
        self,
        allowlist: Mapping[bytes, PublicKey],
        gateway_id: str,
        guard: ReplayGuard,
        *,
        clock_synced: Callable[[], bool],
        max_skew_s: int = 300,
        max_ttl_s: int = 86400,
        now: Callable[[], float] = time.time,
    ) -> None:
        self._keys = dict(allowlist)
        self._gw = gateway_id
        self._guard = guard
        self._synced = clock_synced
        self._skew = max_skew_s
        self._ttl = max_ttl_s
        self._now = now

    def verify(self, message: bytes) -> VerifiedCommand:
        """``authenticate``, ``decode`` then ``admit``."""
        auth = self.authenticate(message)
        cmd = self.decode(auth)
        self.admit(auth.kid, cmd)
        return VerifiedCommand(auth.kid, cmd)

    def authenticate(self, message: bytes) -> Authenticated:
        """The COSE envelope, the signer on the allowlist and the signature. CommandRefused:
        malformed, wrong_alg, unknown_kid, bad_signature."""
        try:
            kid, protected, payload, signature = parse1(message)
        except VerifyError as exc:
            reason = "wrong_alg" if isinstance(exc, WrongAlgorithm) else "malformed"
            raise CommandRefused(reason, str(exc)) from None
        pub = self._keys.get(kid)
        if pub is None:
            raise CommandRefused("unknown_kid", kid.hex())
        if not verified(pub, signature, sig_structure(protected, payload)):
            raise CommandRefused("bad_signature", f"kid {kid.hex()}")
        return Authenticated(kid, payload)

    @staticmethod
    def decode(auth: Authenticated) -> Command:
        """The signed payload as a command; CommandRefused('malformed') if it is not one."""
        return decode_command(auth.payload)

    def admit(self, kid: bytes, cmd: Command) -> None:
        """For this gateway, in its time window, not a replay (then recorded as seen).
        CommandRefused: wrong_gateway, ttl_too_long, clock_unsynced, expired, not_yet_valid,
        replayed_id, replayed_counter, replay_store_unavailable."""
        if cmd.gateway != self._gw:
            raise CommandRefused("wrong_gateway", f"addressed to {cmd.gateway!r}")
        if cmd.exp - cmd.iat > self._ttl:
            raise CommandRefused("ttl_too_long", f"{cmd.exp - cmd.iat} s > {self._ttl} s")
        if not self._synced():
            # without a trusted clock, expiry cannot be judged: refuse rather than guess
            raise CommandRefused("clock_unsynced", "gateway clock not synchronised")
        now = int(self._now())
        if now > cmd.exp + self._skew:
            raise CommandRefused("expired", f"expired {now - cmd.exp} s ago")
        if cmd.iat > now + self._skew:
            raise CommandRefused("not_yet_valid", f"issued {cmd.iat - now} s in the future")
        self._guard.admit(kid, cmd.id, cmd.ctr, cmd.exp, now)
