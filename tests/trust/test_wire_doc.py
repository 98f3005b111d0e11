from __future__ import annotations

import re

import cbor2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pycose.keys.curves import Ed25519
from pycose.keys.okp import OKPKey
from pycose.messages.cosemessage import CoseMessage
from pycose.messages.sign1message import Sign1Message

from edge_agent.trust.batch import decode_payload
from edge_agent.trust.cose import verify1
from edge_agent.trust.keys import kid_of, raw_public
from tests.trust.wire_example import DOC, SEED, doc_section, example_batches, generate


def test_document_shows_what_the_code_produces_today() -> None:
    assert doc_section(DOC.read_text()) == generate(), (
        "docs/wire-format.md is stale: run python -m tests.trust.wire_example --write"
    )


def test_document_hex_verifies_independently() -> None:
    """The complete-message hex blocks in the doc verify with pycose and decode as documented."""
    section = doc_section(DOC.read_text())
    blocks = re.findall(r"Complete message \(hex\):\n\n```\n([0-9a-f\n]+)```", section)
    assert len(blocks) == 2
    key = Ed25519PrivateKey.from_private_bytes(SEED)
    pub = key.public_key()
    for block, batch in zip(blocks, example_batches(), strict=True):
        msg = bytes.fromhex(block.replace("\n", ""))
        assert msg == batch.cose
        decoded = CoseMessage.decode(msg)
        assert isinstance(decoded, Sign1Message)
        decoded.key = OKPKey(crv=Ed25519, x=raw_public(pub))
        assert decoded.verify_signature()
        kid, payload = verify1(msg, {kid_of(pub): pub})
        assert kid.hex() in section
        p = decode_payload(payload)
        assert p.gateway_id == "gw-0042" and p.seq in (1, 8)
        assert list(cbor2.loads(payload)) == sorted(cbor2.loads(payload))
