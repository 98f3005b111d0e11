"""Who may change configuration, and when: roles, signatures, addressing, time, anti-rollback."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.errors import CommandRefused
from edge_agent.rollout.verify import BundleVerifier
from edge_agent.trust.keys import kid_of

from .helpers import bundle, signed

NOW = 1_800_000_000
CONFIG_OP = Ed25519PrivateKey.generate()
COMMAND_OP = Ed25519PrivateKey.generate()


def verifier(*, synced: bool = True, tags: dict[str, str] | None = None) -> BundleVerifier:
    return BundleVerifier({kid_of(CONFIG_OP.public_key()): CONFIG_OP.public_key()},
                          {kid_of(COMMAND_OP.public_key()): COMMAND_OP.public_key()}, "gw-a",
                          tags or {"district": "harbour", "wave": "canary"},
                          clock_synced=lambda: synced, now=lambda: NOW)


def refusal(fn: object, *args: object, **kw: object) -> str:
    with pytest.raises(CommandRefused) as e:
        fn(*args, **kw)  # type: ignore[operator]
    return e.value.reason


def test_a_config_key_is_admitted() -> None:
    v = verifier()
    s = v.authenticate(signed(bundle(4, nbf=NOW), CONFIG_OP))
    assert s.kid == kid_of(CONFIG_OP.public_key())
    b = v.decode(s)
    v.admit(b, highest_version=3, pinned=False)
    assert b.version == 4


def test_a_command_key_cannot_change_configuration() -> None:
    assert refusal(verifier().authenticate, signed(bundle(4, nbf=NOW), COMMAND_OP)) == "wrong_role"


def test_unknown_and_tampered_and_truncated() -> None:
    v = verifier()
    stranger = Ed25519PrivateKey.generate()
    assert refusal(v.authenticate, signed(bundle(4), stranger)) == "unknown_kid"
    msg = bytearray(signed(bundle(4), CONFIG_OP))
    i = msg.index(b"street_lamp")
    msg[i] ^= 0x20  # one bit of the payload
    assert refusal(v.authenticate, bytes(msg)) == "bad_signature"
    assert refusal(v.authenticate, bytes(msg[:-10])) == "malformed"
    # a command key's valid signature over tampered bytes is still a bad signature, not a role
    msg = bytearray(signed(bundle(4), COMMAND_OP))
    msg[msg.index(b"street_lamp")] ^= 0x20
    assert refusal(v.authenticate, bytes(msg)) == "bad_signature"


@pytest.mark.parametrize(("kw", "reason"), [
    ({"nbf": NOW + 3600}, "not_yet_valid"),
    ({"nbf": NOW - 7200, "ttl": 3600}, "expired"),
    ({"nbf": NOW, "targets": ("gw-b",)}, "not_addressed"),
    ({"nbf": NOW, "selector": {"district": "north"}}, "not_addressed"),
])
def test_admission_refusals(kw: dict[str, object], reason: str) -> None:
    b = bundle(4, **kw)  # type: ignore[arg-type]
    assert refusal(verifier().admit, b, highest_version=0, pinned=False) == reason


def test_selector_matches_every_tag() -> None:
    b = bundle(4, nbf=NOW, selector={"district": "harbour", "wave": "canary"})
    verifier().admit(b, highest_version=0, pinned=False)
    assert refusal(verifier(tags={"district": "harbour"}).admit, b, highest_version=0,
                   pinned=False) == "not_addressed"


def test_anti_rollback_pin_and_clock() -> None:
    b = bundle(4, nbf=NOW)
    assert refusal(verifier().admit, b, highest_version=4, pinned=False) == "version_passed"
    assert refusal(verifier().admit, b, highest_version=9, pinned=False) == "version_passed"
    assert refusal(verifier().admit, b, highest_version=0, pinned=True) == "pinned"
    assert refusal(verifier(synced=False).admit, b, highest_version=0,
                   pinned=False) == "clock_unsynced"


def test_skew_tolerated() -> None:
    verifier().admit(bundle(4, nbf=NOW + 200), highest_version=0, pinned=False)
