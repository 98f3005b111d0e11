"""The chain witness's encoding: the epoch (keys 7/8) round-trips, a witness of an older gateway
(no epoch) is still read, a malformed epoch is refused naming it."""

from __future__ import annotations

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.errors import ContractError, VerifyError
from edge_agent.trust.cose import sign1
from edge_agent.trust.keys import kid_of
from edge_agent.trust.witness import KIND_WITNESS, Witness, read_witness, sign_witness

GW = "gw-w"


def _raw(key: Ed25519PrivateKey, extra: dict[int, object]) -> bytes:
    m: dict[int, object] = {0: 1, 1: KIND_WITNESS, 2: GW, 4: 9, 5: bytes(32), 6: 1} | extra
    return sign1(cbor2.dumps(m, canonical=True), key, kid_of(key.public_key()))


def test_epoch_round_trips_and_older_witnesses_are_read() -> None:
    key = Ed25519PrivateKey.generate()
    w = Witness(GW, 9, b"\x01" * 32, 5, b"\x07" * 16, 4)
    assert read_witness(sign_witness(key, w), key.public_key(), GW) == w
    old = read_witness(_raw(key, {}), key.public_key(), GW)
    assert (old.epoch, old.epoch_start) == (b"", 0)


@pytest.mark.parametrize(
    "extra",
    [{7: b"\x07" * 16}, {8: 3}, {7: b"\x07" * 15, 8: 3}, {7: "x" * 16, 8: 3},
     {7: b"\x07" * 16, 8: 10}],
)
def test_malformed_epoch_is_refused(extra: dict[int, object]) -> None:
    key = Ed25519PrivateKey.generate()
    with pytest.raises(VerifyError, match="witness: epoch"):
        read_witness(_raw(key, extra), key.public_key(), GW)


def test_signing_refuses_an_epoch_that_is_not_16_bytes() -> None:
    with pytest.raises(ContractError, match="16 bytes"):
        sign_witness(Ed25519PrivateKey.generate(), Witness(GW, 9, bytes(32), 0, b"\x01", 0))
