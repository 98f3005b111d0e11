"""COSE_Sign1 (RFC 9052) with Ed25519 (alg EdDSA, -8): the envelope of every batch.

Wire form (definite lengths only)::

    d2                      tag 18 (COSE_Sign1)
    84                      array(4)
      <bstr protected>      canonical CBOR map {1: -8, 4: kid}  -> a2 01 27 04 50 <16-byte kid>
      a0                    unprotected: empty map
      <bstr payload>
      58 40 <64 bytes>      Ed25519 signature over the Sig_structure

    Sig_structure = ["Signature1", protected, h'', payload]       (RFC 9052 section 4.4)

``verify1`` parses the envelope by hand (only byte-string heads and fixed bytes), so untrusted input
can never make it allocate more than the input or raise anything but ``VerifyError``.
"""

from __future__ import annotations

from collections.abc import Mapping

import cbor2

from edge_agent.errors import BadSignature, UnknownKid, VerifyError, WrongAlgorithm
from edge_agent.trust.ed25519 import PrivateKey, PublicKey, verified

ALG_EDDSA = -8
HDR_ALG = 1
HDR_CRIT = 2
HDR_KID = 4
TAG_SIGN1 = 18
SIG_LEN = 64

_TAG18_ARRAY4 = b"\xd2\x84"
_EMPTY_MAP = b"\xa0"
_SIG_CONTEXT = b"\x84\x6aSignature1"  # array(4), tstr(10) "Signature1"
_EMPTY_BSTR = b"\x40"


def bstr_head(n: int) -> bytes:
    """CBOR major type 2 (byte string) head for length ``n``, shortest form."""
    if n < 24:
        return bytes((0x40 | n,))
    if n < 0x100:
        return bytes((0x58, n))
    if n < 0x10000:
        return b"\x59" + n.to_bytes(2, "big")
    if n < 0x100000000:
        return b"\x5a" + n.to_bytes(4, "big")
    return b"\x5b" + n.to_bytes(8, "big")


def protected_header(kid: bytes) -> bytes:
    """The serialized protected header map {1: -8, 4: kid} (canonical CBOR)."""
    return cbor2.dumps({HDR_ALG: ALG_EDDSA, HDR_KID: bytes(kid)}, canonical=True)


def sig_structure(protected: bytes, payload: bytes) -> bytes:
    """To-be-signed bytes: CBOR ["Signature1", protected, h'', payload]."""
    return b"".join(
        (
            _SIG_CONTEXT,
            bstr_head(len(protected)),
            protected,
            _EMPTY_BSTR,
            bstr_head(len(payload)),
            payload,
        )
    )


def sign1(payload: bytes, key: PrivateKey, kid: bytes) -> bytes:
    """A tagged COSE_Sign1 message carrying ``payload``, signed with ``key``, naming ``kid``."""
    protected = protected_header(kid)
    signature = key.sign(sig_structure(protected, payload))
    return b"".join(
        (
            _TAG18_ARRAY4,
            bstr_head(len(protected)),
            protected,
            _EMPTY_MAP,
            bstr_head(len(payload)),
            payload,
            bstr_head(SIG_LEN),
            signature,
        )
    )


def _read_bstr(msg: bytes, pos: int, what: str) -> tuple[bytes, int]:
    if pos >= len(msg):
        raise VerifyError(f"COSE_Sign1: truncated before {what} at byte {pos}")
    ib = msg[pos]
    major, info = ib >> 5, ib & 0x1F
    if major != 2:
        raise VerifyError(f"COSE_Sign1: {what} at byte {pos} is not a byte string (0x{ib:02x})")
    pos += 1
    if info < 24:
        n = info
    elif info <= 27:
        width = 1 << (info - 24)
        if pos + width > len(msg):
            raise VerifyError(f"COSE_Sign1: truncated length of {what} at byte {pos}")
        n = int.from_bytes(msg[pos : pos + width], "big")
        pos += width
    else:
        raise VerifyError(
            f"COSE_Sign1: {what} at byte {pos - 1} has indefinite/reserved length (0x{ib:02x})"
        )
    if n > len(msg) - pos:
        raise VerifyError(
            f"COSE_Sign1: {what} at byte {pos} claims {n} bytes, only {len(msg) - pos} left"
        )
    return msg[pos : pos + n], pos + n


def _parse_protected(protected: bytes) -> bytes:
    """kid from the protected header; the algorithm must be EdDSA and nothing may be critical."""
    try:
        hdr = cbor2.loads(protected)
    except Exception as exc:  # cbor2 raises several types on garbage; all mean "malformed"
        raise VerifyError(f"COSE_Sign1: protected header is not valid CBOR ({exc})") from None
    if not isinstance(hdr, dict):
        raise VerifyError("COSE_Sign1: protected header is not a map")
    alg = hdr.get(HDR_ALG)
    if type(alg) is not int or alg != ALG_EDDSA:
        raise WrongAlgorithm(f"COSE_Sign1: algorithm {alg!r} is not EdDSA (-8)")
    if HDR_CRIT in hdr:
        raise VerifyError("COSE_Sign1: critical header parameters are not supported")
    kid = hdr.get(HDR_KID)
    if not isinstance(kid, bytes):
        raise VerifyError("COSE_Sign1: protected header has no kid (label 4, bstr)")
    return kid


def parse1(msg: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    """Split a COSE_Sign1 message into (kid, protected, payload, signature) without verifying."""
    if not isinstance(msg, bytes | bytearray | memoryview):
        raise VerifyError(f"COSE_Sign1: expected bytes, got {type(msg).__name__}")
    msg = bytes(msg)
    if len(msg) < 2 or msg[0] != 0xD2:
        raise VerifyError("COSE_Sign1: not a CBOR tag 18 (byte 0 must be 0xd2)")
    if msg[1] != 0x84:
        raise VerifyError(f"COSE_Sign1: byte 1 must be 0x84 (array of 4), got 0x{msg[1]:02x}")
    protected, pos = _read_bstr(msg, 2, "protected header")
    if pos >= len(msg) or msg[pos] != 0xA0:
        raise VerifyError(f"COSE_Sign1: unprotected header at byte {pos} must be an empty map")
    payload, pos = _read_bstr(msg, pos + 1, "payload")
    signature, pos = _read_bstr(msg, pos, "signature")
    if pos != len(msg):
        raise VerifyError(f"COSE_Sign1: {len(msg) - pos} trailing bytes after byte {pos}")
    if len(signature) != SIG_LEN:
        raise VerifyError(f"COSE_Sign1: signature is {len(signature)} bytes, not {SIG_LEN}")
    kid = _parse_protected(protected)
    return kid, protected, payload, signature


def verify1(msg: bytes, keys: Mapping[bytes, PublicKey]) -> tuple[bytes, bytes]:
    """(kid, payload) of a COSE_Sign1 message whose signature checks under ``keys[kid]``.

    Raises VerifyError (and only VerifyError) for: not tag 18, malformed structure, wrong
    algorithm (``WrongAlgorithm``), unknown kid (``UnknownKid``), bad signature
    (``BadSignature``)."""
    kid, protected, payload, signature = parse1(msg)
    pub = keys.get(kid)
    if pub is None:
        raise UnknownKid(f"COSE_Sign1: unknown kid {kid.hex()}")
    if not verified(pub, signature, sig_structure(protected, payload)):
        raise BadSignature(f"COSE_Sign1: bad signature (kid {kid.hex()})")
    return kid, payload
