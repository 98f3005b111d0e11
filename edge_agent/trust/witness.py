"""The chain witness: the gateway's own signed statement "no batch above seq N, whose digest is D,
has left me", kept retained on the broker (``<prefix>/<gateway>/chain``).

The uplink publishes a fresh witness (the outbox head) before it publishes any batch above the
last one it announced, so the retained witness is always at or above every seq on the wire. A
gateway whose state directory was restored from an older copy reads it back at connect and moves
its chain past it (outbox/rechain.py) instead of signing those seqs a second time.

COSE_Sign1 (the gateway key, like a batch) over deterministic CBOR
``{0: 1, 1: 16, 2: gateway id, 4: seq, 5: digest(32), 6: created wall ns, 7: epoch(16),
8: epoch start seq}``. The epoch is the daemon run that signed it (outbox/epochs.py): it lets a
restored state recognise the witness as one it cannot know of, whatever batches it still holds.
Witnesses without keys 7/8 (older gateways) are still read. Kind 16 is no batch kind, so a witness
replayed onto a data topic is rejected as malformed.
"""

from __future__ import annotations

from dataclasses import dataclass

import cbor2

from edge_agent.errors import ContractError, VerifyError
from edge_agent.trust.cose import sign1, verify1
from edge_agent.trust.ed25519 import PrivateKey, PublicKey
from edge_agent.trust.keys import kid_of

KIND_WITNESS = 16
EPOCH_BYTES = 16


@dataclass(frozen=True, slots=True)
class Witness:
    gateway_id: str
    seq: int  # highest seq that may have been published (0: none)
    digest: bytes  # SHA-256 of that batch's COSE bytes (32 zero bytes for seq 0)
    created_ns: int
    epoch: bytes = b""  # the daemon run (epoch) that signed it; empty from older gateways
    epoch_start: int = 0  # the seq that epoch started from


def sign_witness(key: PrivateKey, w: Witness) -> bytes:
    if len(w.digest) != 32 or w.seq < 0:
        raise ContractError("witness needs seq >= 0 and a 32-byte digest")
    payload: dict[int, object] = {0: 1, 1: KIND_WITNESS, 2: w.gateway_id, 4: w.seq,
                                  5: w.digest, 6: w.created_ns}  # fmt: skip
    if w.epoch:
        if len(w.epoch) != EPOCH_BYTES or not 0 <= w.epoch_start <= w.seq:
            raise ContractError("witness epoch must be 16 bytes, its start at most its seq")
        payload |= {7: w.epoch, 8: w.epoch_start}
    return sign1(cbor2.dumps(payload, canonical=True), key, kid_of(key.public_key()))


def read_witness(msg: bytes, public_key: PublicKey, gateway_id: str) -> Witness:
    """The witness in ``msg`` if ``public_key`` signed it for ``gateway_id``; else VerifyError."""
    _kid, payload = verify1(msg, {kid_of(public_key): public_key})
    try:
        m = cbor2.loads(payload)
    except Exception as exc:  # cbor2 raises several types on garbage
        raise VerifyError(f"witness: not valid CBOR ({exc})") from None
    if type(m) is not dict or m.get(0) != 1 or m.get(1) != KIND_WITNESS:
        raise VerifyError("witness: not a version 1 witness map")
    gw, seq, digest, created = m.get(2), m.get(4), m.get(5), m.get(6)
    if type(seq) is not int or seq < 0 or type(digest) is not bytes or len(digest) != 32:
        raise VerifyError("witness: seq or digest malformed")
    if type(created) is not int:
        raise VerifyError("witness: created is not an integer")
    if gw != gateway_id:
        raise VerifyError(f"witness: for gateway {gw!r}, not {gateway_id!r}")
    epoch, start = m.get(7, b""), m.get(8, 0)
    if (7 in m) != (8 in m) or type(epoch) is not bytes or type(start) is not int:
        raise VerifyError("witness: epoch and its start malformed")
    if epoch and (len(epoch) != EPOCH_BYTES or not 0 <= start <= seq):
        raise VerifyError("witness: epoch must be 16 bytes, its start at most its seq")
    return Witness(gateway_id, seq, digest, created, epoch, start)
