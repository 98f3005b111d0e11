from __future__ import annotations

import cbor2
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycose.algorithms import EdDSA
from pycose.headers import KID, Algorithm
from pycose.keys.curves import Ed25519
from pycose.keys.okp import OKPKey
from pycose.messages.cosemessage import CoseMessage
from pycose.messages.sign1message import Sign1Message

from edge_agent.errors import VerifyError
from edge_agent.trust.cose import bstr_head, parse1, sig_structure, sign1, verify1
from edge_agent.trust.keys import kid_of, raw_public
from tests.trust.helpers import fixed_key, keyring

KEY = fixed_key(0)
KID_ = kid_of(KEY.public_key())
KEYS = keyring(KEY)
VALID = sign1(b"hello batch", KEY, KID_)


def _okp(key: Ed25519PrivateKey, *, private: bool = False) -> OKPKey:
    x = raw_public(key.public_key())
    if not private:
        return OKPKey(crv=Ed25519, x=x)
    d = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return OKPKey(crv=Ed25519, x=x, d=d)


@pytest.mark.parametrize("payload", [b"", b"x", b"a" * 23, b"b" * 24, b"c" * 300, b"d" * 70000])
def test_pycose_verifies_our_messages(payload: bytes) -> None:
    msg = sign1(payload, KEY, KID_)
    decoded = CoseMessage.decode(msg)
    assert isinstance(decoded, Sign1Message)
    assert decoded.phdr[Algorithm] is EdDSA or decoded.phdr[Algorithm] == EdDSA
    assert decoded.phdr[KID] == KID_
    assert decoded.payload == payload
    decoded.key = _okp(KEY)
    assert decoded.verify_signature()
    # and the same bytes under another key must not verify with pycose either
    again = CoseMessage.decode(msg)
    assert isinstance(again, Sign1Message)
    again.key = _okp(fixed_key(1))
    assert not again.verify_signature()
    assert verify1(msg, KEYS) == (KID_, payload)


def test_we_verify_pycose_messages() -> None:
    m = Sign1Message(phdr={Algorithm: EdDSA, KID: KID_}, payload=b"from pycose")
    m.key = _okp(KEY, private=True)
    assert verify1(m.encode(), KEYS) == (KID_, b"from pycose")


def test_envelope_bytes() -> None:
    # d2 84 | 55 a2 01 27 04 50 <kid16> | a0 | 4b "hello batch" | 58 40 <sig64>
    protected = bytes.fromhex("a2012704") + b"\x50" + KID_
    assert VALID[:3] == bytes.fromhex("d28455") and VALID[3:24] == protected
    assert VALID[24:26] == bytes.fromhex("a04b") and VALID[26:37] == b"hello batch"
    assert VALID[37:39] == bytes.fromhex("5840") and len(VALID) == 39 + 64
    KEY.public_key().verify(VALID[39:], sig_structure(protected, b"hello batch"))
    expect = cbor2.dumps(["Signature1", protected, b"", b"hello batch"])
    assert sig_structure(protected, b"hello batch") == expect


@pytest.mark.parametrize(
    ("n", "head"),
    [
        (0, "40"),
        (23, "57"),
        (24, "5818"),
        (255, "58ff"),
        (256, "590100"),
        (65535, "59ffff"),
        (65536, "5a00010000"),
        (2**32 - 1, "5affffffff"),
        (2**32, "5b0000000100000000"),
    ],
)
def test_bstr_head_is_cbor_shortest(n: int, head: str) -> None:
    assert bstr_head(n).hex() == head
    if n <= 65536:
        assert cbor2.dumps(b"\0" * n).startswith(bytes.fromhex(head))


def _flip(data: bytes, index: int) -> bytes:
    b = bytearray(data)
    b[index] ^= 0x01
    return bytes(b)


def test_rejections_name_the_reason() -> None:
    cases: list[tuple[bytes, str]] = [
        (b"", "not a CBOR tag 18"),
        (VALID[1:], "not a CBOR tag 18"),
        (cbor2.dumps(cbor2.CBORTag(98, [])), "not a CBOR tag 18"),
        (b"\xd2\x83" + VALID[2:], "array of 4"),
        (VALID + b"\x00", "trailing bytes"),
        (VALID[:-1], "claims 64 bytes"),
        (_flip(VALID, 30), "bad signature"),  # payload tampered
        (_flip(VALID, len(VALID) - 1), "bad signature"),
        (sign1(b"p", fixed_key(1), kid_of(fixed_key(1).public_key())), "unknown kid"),
        (sign1(b"p", fixed_key(1), KID_), "bad signature"),  # right kid, wrong key
    ]
    for msg, reason in cases:
        with pytest.raises(VerifyError, match=reason):
            verify1(msg, KEYS)


def _with_protected(prot: dict[int, object]) -> bytes:
    p = cbor2.dumps(prot)
    sig = KEY.sign(sig_structure(p, b"x"))
    return cbor2.dumps(cbor2.CBORTag(18, [p, {}, b"x", sig]))


def test_header_checks() -> None:
    assert verify1(_with_protected({1: -8, 4: KID_}), KEYS)[1] == b"x"
    with pytest.raises(VerifyError, match="not EdDSA"):
        verify1(_with_protected({1: -7, 4: KID_}), KEYS)
    with pytest.raises(VerifyError, match="no kid"):
        verify1(_with_protected({1: -8}), KEYS)
    with pytest.raises(VerifyError, match="critical"):
        verify1(_with_protected({1: -8, 2: [99], 4: KID_}), KEYS)
    with pytest.raises(VerifyError, match="not EdDSA"):
        verify1(_with_protected({1: True, 4: KID_}), KEYS)  # bool is not the integer -8
    unprot = cbor2.dumps(cbor2.CBORTag(18, [cbor2.dumps({1: -8}), {4: KID_}, b"x", b"s" * 64]))
    with pytest.raises(VerifyError, match="unprotected"):
        verify1(unprot, KEYS)
    with pytest.raises(VerifyError, match="expected bytes"):
        parse1("text")  # type: ignore[arg-type]


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_only_raise_verify_error(data: bytes) -> None:
    with pytest.raises(VerifyError):
        verify1(data, KEYS)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_valid_messages_only_raise_verify_error(data: st.DataObject) -> None:
    msg = bytearray(VALID)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(msg) - 1))
        msg[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(msg)))
    mutated = bytes(msg[:cut]) if data.draw(st.booleans()) else bytes(msg)
    if mutated == VALID:
        assert verify1(mutated, KEYS)[1] == b"hello batch"
        return
    with pytest.raises(VerifyError):
        verify1(mutated, KEYS)


cbor_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.integers(-5, 5), inner),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(cbor_values, st.booleans())
def test_well_formed_cbor_of_any_shape_only_raises_verify_error(value: object, tag: bool) -> None:
    data = cbor2.dumps(cbor2.CBORTag(18, value) if tag else value)
    with pytest.raises(VerifyError):
        verify1(data, KEYS)
