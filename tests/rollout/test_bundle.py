"""The bundle payload: round trip, every malformed field named, and no confusion with commands."""

from __future__ import annotations

import cbor2
import pytest

from edge_agent.commands.model import Action, Command, decode_command, encode_command
from edge_agent.errors import CommandRefused
from edge_agent.rollout.bundle import Bundle, decode_bundle, encode_bundle

from .helpers import bundle


def test_round_trip_and_hash_covers_the_configuration_only() -> None:
    b = bundle(7, selector={"district": "harbour"})
    assert decode_bundle(encode_bundle(b)) == b
    moved = Bundle(8, b.iat + 5, b.nbf + 5, b.exp + 5, b.config, b.profiles, ("gw-x",))
    assert moved.hash == b.hash  # same configuration, other version/targets/window
    other = Bundle(8, b.iat, b.nbf, b.exp, b.config + "\n", b.profiles, ("gw-x",))
    assert other.hash != b.hash


def test_encoding_is_deterministic() -> None:
    b = bundle(3)
    assert encode_bundle(b) == encode_bundle(decode_bundle(encode_bundle(b)))


def _with(**changes: object) -> bytes:
    m = cbor2.loads(encode_bundle(bundle(3)))
    for k, v in changes.items():
        key = int(k[1:])
        if v is None:
            m.pop(key, None)
        else:
            m[key] = v
    return cbor2.dumps(m, canonical=True)


@pytest.mark.parametrize(("changes", "needle"), [
    ({"k2": "something-else"}, "key 2 (kind)"),
    ({"k3": 0}, "key 3 (ver: the configuration version) must be >= 1"),
    ({"k3": "7"}, "key 3 (ver: the configuration version) has type str"),
    ({"k6": 1}, "key 6 (exp: expiry) must be after key 5 (nbf: not before)"),
    ({"k8": {"a": "b"}}, "exactly one of key 7"),
    ({"k7": None}, "exactly one of key 7"),
    ({"k7": ["../etc"]}, "key 7 (gateways)"),
    ({"k10": {"../evil": "x"}}, "key 10 (profiles)"),
    ({"k10": {"p": 3}}, "key 10 (profiles)"),
    ({"k11": 1}, "key 11 (probation window)"),
    ({"k12": 0.5}, "never loosen"),
    ({"k12": True}, "key 12"),
    ({"k9": None}, "missing key 9"),
])
def test_malformed_fields_are_named(changes: dict[str, object], needle: str) -> None:
    with pytest.raises(CommandRefused) as e:
        decode_bundle(_with(**changes))
    assert e.value.reason == "malformed" and needle in e.value.detail


def test_garbage_is_malformed() -> None:
    for junk in (b"", b"\xff\x00", cbor2.dumps([1, 2]), cbor2.dumps({1: 2})):
        with pytest.raises(CommandRefused) as e:
            decode_bundle(junk)
        assert e.value.reason == "malformed"


def test_a_command_is_never_a_bundle_nor_a_bundle_a_command() -> None:
    cmd = encode_command(Command(b"\x01" * 16, 1, 2, 1, "gw-a", Action.RELOAD))
    with pytest.raises(CommandRefused, match="malformed"):
        decode_bundle(cmd)
    with pytest.raises(CommandRefused, match="malformed"):
        decode_command(encode_bundle(bundle(3)))
