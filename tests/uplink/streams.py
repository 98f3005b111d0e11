"""What the subscriber saw: seqs in arrival order, first-arrival order, verification."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.outbox.store import Outbox
from edge_agent.trust.batch import BatchSigner, ChainHead, SignedBatch, decode_payload
from edge_agent.trust.cose import parse1
from edge_agent.trust.verify import VerifyReport
from simulators.synthetic import synthetic_readings
from tests.outbox.chains import verify_all


def seq_of(cose: bytes) -> int:
    return decode_payload(parse1(cose)[2]).seq


def first_arrivals(payloads: Sequence[bytes]) -> list[int]:
    seen: set[int] = set()
    out: list[int] = []
    for p in payloads:
        s = seq_of(p)
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


def append_batches(
    signer: BatchSigner, box: Outbox, n: int, per_batch: int = 20, pace_s: float = 0.0
) -> list[SignedBatch]:
    """Sign and commit ``n`` batches, one transaction each, ``pace_s`` apart."""
    out: list[SignedBatch] = []
    for _ in range(n):
        if pace_s:
            time.sleep(pace_s)
        h = box.head
        readings = list(synthetic_readings(per_batch, start=h.seq * per_batch))
        b = signer.sign_readings(
            ChainHead(h.seq, h.prev), readings, created_ns=1, clock_synced=True
        )
        box.append([b])
        out.append(b)
    return out


def check_stream(key: Ed25519PrivateKey, payloads: Sequence[bytes], expect: int) -> VerifyReport:
    """Every seq 1..expect arrived, first arrivals in seq order, chain verifies."""
    order = first_arrivals(payloads)
    missing = set(range(1, expect + 1)) - set(order)
    assert not missing and len(order) == expect, f"missing: {sorted(missing)[:20]}"
    assert order == sorted(order), "wire order differs from seq order"
    report = verify_all(key, payloads)
    assert report.ok, report.problems
    assert report.batches == expect
    return report


def status_docs(payloads: Sequence[bytes]) -> list[dict[str, object]]:
    return [json.loads(p) for p in payloads]
