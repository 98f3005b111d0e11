"""Helpers for the outbox tests: sign chains of synthetic batches, verify what a store holds."""

from __future__ import annotations

from collections.abc import Sequence

from edge_agent.outbox.runs import DropPlan
from edge_agent.outbox.store import Outbox
from edge_agent.trust.batch import BatchSigner, ChainHead, SignedBatch
from edge_agent.trust.ed25519 import PrivateKey
from edge_agent.trust.keys import kid_of
from edge_agent.trust.verify import ChainVerifier, VerifyReport
from simulators.synthetic import synthetic_readings

GATEWAY = "gw-outbox-test"


def sign_chain(
    signer: BatchSigner,
    box: Outbox,
    n_batches: int,
    per_batch: int = 10,
    *,
    alarm_at: Sequence[int] = (),
) -> list[SignedBatch]:
    """``n_batches`` batches chained onto the store's head (not appended)."""
    head = ChainHead(box.head.seq, box.head.prev)
    out: list[SignedBatch] = []
    for i in range(n_batches):
        readings = list(synthetic_readings(per_batch, start=(head.seq + 1) * per_batch))
        if i in alarm_at:
            r = readings[-1]
            readings[-1] = type(r)(
                r.device, r.point, r.value, r.unit, r.ts_ns, r.mono_ns, alarm=True
            )
        b = signer.sign_readings(head, readings, created_ns=readings[0].ts_ns, clock_synced=True)
        out.append(b)
        head = BatchSigner.next_head(b)
    return out


def drop_plan(
    ranges: Sequence[tuple[int, int]], readings: int, t_first_ns: int = 1, t_last_ns: int = 2,
    *, unsigned: int = 0,
) -> DropPlan:
    """A drop naming ``ranges`` (the data batches of them, for tests that sign notices)."""
    seqs = tuple(s for a, b in ranges for s in range(a, b + 1))
    return DropPlan(seqs, tuple(ranges), readings, unsigned, 100 * len(seqs), t_first_ns,
                    t_last_ns, len(seqs), readings, 0, 0)  # fmt: skip


def verifier(key: PrivateKey) -> ChainVerifier:
    return ChainVerifier({kid_of(key.public_key()): key.public_key()})


def verify_all(key: PrivateKey, messages: Sequence[bytes]) -> VerifyReport:
    v = verifier(key)
    v.feed_many(messages)
    return v.summary()
