"""Checks a configuration bundle before anything is written. Like commands (commands/verify.py),
in three steps so every later refusal names the signer: ``authenticate`` (envelope, the signer's
role, the signature), ``decode`` (the payload), ``admit`` (addressed to this box, not pinned, in
its time window, above every version already admitted).

Roles: only a key in ``[keys] config_keys`` may sign configuration. A message signed (validly) by a
command key is refused ``wrong_role``: a command key cannot change configuration. Nothing is
recorded before the signature held.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from edge_agent.errors import CommandRefused, VerifyError, WrongAlgorithm
from edge_agent.rollout.bundle import MAX_BUNDLE, Bundle, decode_bundle
from edge_agent.trust.cose import parse1, sig_structure
from edge_agent.trust.ed25519 import PublicKey, verified


@dataclass(frozen=True, slots=True)
class Signed:
    kid: bytes
    payload: bytes


class BundleVerifier:
    def __init__(self, config_keys: Mapping[bytes, PublicKey],
                 command_keys: Mapping[bytes, PublicKey], gateway_id: str,
                 tags: Mapping[str, str], *, clock_synced: Callable[[], bool],
                 max_skew_s: int = 300, now: Callable[[], float] = time.time) -> None:
        self._config_keys = dict(config_keys)
        self._command_keys = dict(command_keys)
        self._gw = gateway_id
        self._tags = dict(tags)
        self._synced = clock_synced
        self._skew = max_skew_s
        self._now = now

    def authenticate(self, message: bytes) -> Signed:
        """CommandRefused: malformed, wrong_alg, unknown_kid, wrong_role, bad_signature."""
        if len(message) > MAX_BUNDLE:
            raise CommandRefused("malformed", f"{len(message)} bytes > {MAX_BUNDLE}")
        try:
            kid, protected, payload, signature = parse1(message)
        except VerifyError as exc:
            reason = "wrong_alg" if isinstance(exc, WrongAlgorithm) else "malformed"
            raise CommandRefused(reason, str(exc)) from None
        pub = self._config_keys.get(kid)
        role_ok = pub is not None
        if pub is None:
            pub = self._command_keys.get(kid)
        if pub is None:
            raise CommandRefused("unknown_kid", kid.hex())
        if not verified(pub, signature, sig_structure(protected, payload)):
            raise CommandRefused("bad_signature", f"kid {kid.hex()}")
        if not role_ok:
            raise CommandRefused("wrong_role", f"kid {kid.hex()} is a command key; only "
                                 "[keys] config_keys may sign configuration")
        return Signed(kid, payload)

    @staticmethod
    def decode(signed: Signed) -> Bundle:
        return decode_bundle(signed.payload)

    def admit(self, b: Bundle, *, highest_version: int, pinned: bool) -> None:
        """``admit_target``, ``admit_time`` then ``admit_version``."""
        self.admit_target(b, pinned=pinned)
        self.admit_time(b)
        self.admit_version(b, highest_version)

    def admit_target(self, b: Bundle, *, pinned: bool, pin_reason: str = "") -> None:
        """CommandRefused: not_addressed, pinned (naming the technician's reason)."""
        if not b.addressed_to(self._gw, self._tags):
            raise CommandRefused("not_addressed", f"bundle for {b.describe_target()}")
        if pinned:
            why = f" ({pin_reason!r})" if pin_reason else " (no reason given)"
            raise CommandRefused("pinned", f"a technician pinned the local config{why}; "
                                 "edge-agent config unpin on the box")

    def admit_time(self, b: Bundle) -> None:
        """CommandRefused: clock_unsynced, not_yet_valid, expired."""
        if not self._synced():
            raise CommandRefused("clock_unsynced", "gateway clock not synchronised: the "
                                 "bundle's validity window cannot be checked")
        now = int(self._now())
        if now + self._skew < b.nbf:
            raise CommandRefused("not_yet_valid", f"valid from {b.nbf}, {b.nbf - now} s ahead")
        if now > b.exp + self._skew:
            raise CommandRefused("expired", f"expired {now - b.exp} s ago")

    @staticmethod
    def admit_version(b: Bundle, highest_version: int) -> None:
        """CommandRefused: version_passed (anti-rollback)."""
        if b.version <= highest_version:
            raise CommandRefused("version_passed", f"version {b.version} <= {highest_version}, "
                                 "the highest this gateway admitted")
