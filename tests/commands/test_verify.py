"""Every refusal reason of a remote command, and the accepted path, on pure logic."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.commands.execute import check_target
from edge_agent.commands.model import Action, Command, decode_command, encode_command
from edge_agent.commands.replay import ReplayGuard
from edge_agent.commands.verify import CommandVerifier
from edge_agent.config.model import AgentConfig
from edge_agent.errors import CommandRefused
from edge_agent.trust.cose import bstr_head, sign1
from edge_agent.trust.keys import kid_of

from .conftest import NOW


def cmd(**kw: object) -> Command:
    base = Command(os.urandom(16), NOW - 1, NOW + 300, 1, "gw-test", Action.WRITE,
                   "lamp-01", "dimming", 40)
    return replace(base, **kw)  # type: ignore[arg-type]


def signed(c: Command, key: Ed25519PrivateKey) -> bytes:
    return sign1(encode_command(c), key, kid_of(key.public_key()))


def reason(verifier: CommandVerifier, msg: bytes) -> str:
    with pytest.raises(CommandRefused) as info:
        verifier.verify(msg)
    return info.value.reason


def test_accepts_a_good_command(verifier: CommandVerifier, operator: Ed25519PrivateKey) -> None:
    c = cmd()
    v = verifier.verify(signed(c, operator))
    assert v.command == c and v.kid == kid_of(operator.public_key())


def test_bad_signature(verifier: CommandVerifier, operator: Ed25519PrivateKey) -> None:
    msg = bytearray(signed(cmd(), operator))
    msg[-1] ^= 1
    assert reason(verifier, bytes(msg)) == "bad_signature"


def test_unknown_kid(verifier: CommandVerifier) -> None:
    assert reason(verifier, signed(cmd(), Ed25519PrivateKey.generate())) == "unknown_kid"


def test_wrong_alg(verifier: CommandVerifier, operator: Ed25519PrivateKey) -> None:
    kid = kid_of(operator.public_key())
    protected = cbor2.dumps({1: -7, 4: kid}, canonical=True)  # ES256 claimed
    payload = encode_command(cmd())
    msg = (b"\xd2\x84" + bstr_head(len(protected)) + protected + b"\xa0"
           + bstr_head(len(payload)) + payload + b"\x58\x40" + bytes(64))
    assert reason(verifier, msg) == "wrong_alg"


def test_replayed_id_and_counter(verifier: CommandVerifier, operator: Ed25519PrivateKey) -> None:
    c = cmd(ctr=10)
    verifier.verify(signed(c, operator))
    assert reason(verifier, signed(c, operator)) == "replayed_id"
    assert reason(verifier, signed(cmd(ctr=10), operator)) == "replayed_counter"
    assert reason(verifier, signed(cmd(ctr=9), operator)) == "replayed_counter"
    verifier.verify(signed(cmd(ctr=11), operator))


def test_replay_protection_survives_restart(
    tmp_path: Path, operator: Ed25519PrivateKey
) -> None:
    keys = {kid_of(operator.public_key()): operator.public_key()}
    c = cmd(ctr=5)
    g1 = ReplayGuard(tmp_path / "r.db")
    CommandVerifier(keys, "gw-test", g1, clock_synced=lambda: True, now=lambda: NOW).verify(
        signed(c, operator))
    g1.close()
    g2 = ReplayGuard(tmp_path / "r.db")
    try:
        v2 = CommandVerifier(keys, "gw-test", g2, clock_synced=lambda: True, now=lambda: NOW)
        assert reason(v2, signed(c, operator)) == "replayed_id"
        assert reason(v2, signed(cmd(ctr=4), operator)) == "replayed_counter"
    finally:
        g2.close()


def test_time_window(verifier: CommandVerifier, operator: Ed25519PrivateKey) -> None:
    assert reason(verifier, signed(cmd(iat=NOW - 4000, exp=NOW - 1000), operator)) == "expired"
    assert reason(verifier, signed(cmd(iat=NOW + 1000, exp=NOW + 2000), operator)) == (
        "not_yet_valid")
    assert reason(verifier, signed(cmd(exp=NOW + 10 * 86400), operator)) == "ttl_too_long"


def test_unsynced_clock_refuses(operator: Ed25519PrivateKey, guard: ReplayGuard) -> None:
    v = CommandVerifier({kid_of(operator.public_key()): operator.public_key()}, "gw-test",
                        guard, clock_synced=lambda: False, now=lambda: NOW)
    assert reason(v, signed(cmd(), operator)) == "clock_unsynced"


def test_wrong_gateway(verifier: CommandVerifier, operator: Ed25519PrivateKey) -> None:
    assert reason(verifier, signed(cmd(gateway="gw-other"), operator)) == "wrong_gateway"


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({"device": "lamp-99"}, "unknown_device"),
        ({"point": "brightness"}, "unknown_point"),
        ({"point": "power", "value": 10}, "not_writable"),
        ({"value": 101}, "out_of_bounds"),
        ({"value": -1}, "out_of_bounds"),
        ({"value": 40.5}, "out_of_bounds"),  # step 1
        ({"point": "light_mode", "value": "disco"}, "out_of_bounds"),
    ],
)
def test_target_checks(config: AgentConfig, kw: dict[str, object], expected: str) -> None:
    with pytest.raises(CommandRefused) as info:
        check_target(config, cmd(**kw))
    assert info.value.reason == expected


def test_target_accepts_bounds_and_enum(config: AgentConfig) -> None:
    check_target(config, cmd(value=100))
    check_target(config, cmd(point="light_mode", value="manual"))
    check_target(config, cmd(point="lamp_on", value=True))


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300))
def test_arbitrary_bytes_are_refused_cleanly(verifier: CommandVerifier, data: bytes) -> None:
    with pytest.raises(CommandRefused):
        verifier.verify(data)


cbor_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10)
    | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.integers(0, 12) | st.text(max_size=3), inner, max_size=6),
    max_leaves=12,
)


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cbor_values)
def test_malformed_payload_of_any_shape(
    verifier: CommandVerifier, operator: Ed25519PrivateKey, value: object
) -> None:
    """Correctly signed garbage: never executed, refused as malformed (or a later check)."""
    msg = sign1(cbor2.dumps(value), operator, kid_of(operator.public_key()))
    with pytest.raises(CommandRefused) as info:
        verifier.verify(msg)
    assert info.value.reason in {"malformed", "wrong_gateway", "expired", "not_yet_valid",
                                 "ttl_too_long"}


def test_payload_round_trip() -> None:
    c = cmd(value="manual", point="light_mode")
    assert decode_command(encode_command(c)) == c
