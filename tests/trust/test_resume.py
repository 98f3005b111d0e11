"""The resume notice (kind 2): encoding, strict decoding, and what the verifier makes of it."""

from __future__ import annotations

import hashlib

import cbor2
import pytest

from edge_agent.errors import ContractError, VerifyError
from edge_agent.trust.batch import (
    K_RESUME_FROM,
    K_RESUME_RESIGNED,
    BatchSigner,
    ChainHead,
    ResumeNotice,
    decode_payload,
    encode_payload,
)
from edge_agent.trust.cose import parse1
from edge_agent.trust.verify import ChainVerifier
from tests.trust.helpers import BOOT, GATEWAY, T0, build_chain, fixed_key, keyring

SIGNER = BatchSigner(fixed_key(0), GATEWAY, BOOT)
KEYS = keyring(fixed_key(0))


def _resume(head_batch_seq: int, digest: bytes, frm: int, local: int, n: int) -> bytes:
    return SIGNER.sign_resume(
        ChainHead(head_batch_seq, digest), ResumeNotice(frm, local, n, "state_rollback"),
        created_ns=T0, clock_synced=True,
    ).cose  # fmt: skip


def test_round_trip_and_resign_keeps_the_batch() -> None:
    chain = build_chain(SIGNER, 3)
    msg = _resume(3, chain[-1].digest, 2, 3, 2)
    p = decode_payload(parse1(msg)[2])
    assert (p.kind, p.seq, p.prev, p.readings, p.gap) == ("resume", 4, chain[-1].digest, (), None)
    assert p.resume == ResumeNotice(2, 3, 2, "state_rollback")
    assert encode_payload(p) == parse1(msg)[2]
    old = decode_payload(parse1(chain[1].cose)[2])
    moved = SIGNER.resign(old, ChainHead(4, hashlib.sha256(msg).digest()))
    q = decode_payload(parse1(moved.cose)[2])
    assert (q.seq, q.readings, q.boot_id, q.created_ns) == (5, old.readings, BOOT, old.created_ns)
    with pytest.raises(ContractError, match="not 'gw-x'"):
        BatchSigner(fixed_key(0), "gw-x", BOOT).resign(old, ChainHead(4, bytes(32)))


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (K_RESUME_FROM, 9, r"payload\[19\]: resume from 9 after seq 4"),
        (K_RESUME_FROM, 0, r"payload\[19\]: 0 is below 1"),
        (K_RESUME_RESIGNED, 3, r"payload\[21\]: 3 re-signed batches do not fit in 2..3"),
        (18, 5, r"payload\[18\]: expected str"),
    ],
)
def test_malformed_resume_notice_is_refused(key: int, value: object, message: str) -> None:
    m = cbor2.loads(parse1(_resume(3, bytes(32), 2, 3, 2))[2])
    m[key] = value
    with pytest.raises(VerifyError, match=message):
        decode_payload(cbor2.dumps(m, canonical=True))


def test_verifier_links_it_counts_it_and_it_explains_what_the_earlier_state_lost() -> None:
    chain = build_chain(SIGNER, 8)
    notice = _resume(8, chain[-1].digest, 4, 5, 2)  # restored at 3: seqs 4..8 not vouched for
    after = build_chain(SIGNER, 2, head=ChainHead(9, hashlib.sha256(notice).digest()))
    v = ChainVerifier(KEYS)
    for b in chain[:6]:  # 7 and 8 were announced by the earlier state but never arrived
        v.feed(b.cose)
    v.feed(notice)
    v.feed_many(b.cose for b in after)
    r = v.summary()
    assert r.ok, r.problems
    assert (r.resumes, r.batches, r.gaps_explained, r.gaps_unexplained) == (1, 9, 2, 0)
    assert r.links_unchecked == 1  # the notice follows the hole
    v2 = ChainVerifier(KEYS)  # the same notice cannot explain a hole below its range
    v2.feed_many([b.cose for b in chain if b.seq != 2] + [notice])
    r2 = v2.summary()
    assert not r2.ok and r2.unexplained == ((GATEWAY, 2, 2),)
