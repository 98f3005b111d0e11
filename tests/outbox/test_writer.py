"""SigningWriter (the batcher's commit in the daemon) and make_gap_signer, on a real outbox."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.errors import OutboxError
from edge_agent.outbox.records import BatchLike
from edge_agent.outbox.store import Outbox
from edge_agent.outbox.writer import GAP_REASON, SigningWriter, make_gap_signer
from edge_agent.trust.batch import GENESIS_PREV, BatchSigner, decode_payload
from edge_agent.trust.cose import parse1
from edge_agent.trust.gap import GapNotice
from simulators.synthetic import synthetic_readings
from tests.outbox.chains import drop_plan, verify_all


def test_group_is_signed_as_one_chain_and_appended_in_one_transaction(
    outbox: Outbox, signer: BatchSigner, key: Ed25519PrivateKey
) -> None:
    commits: list[int] = []
    outbox.add_listener(lambda: commits.append(outbox.head.seq))
    write = SigningWriter(signer, outbox)
    readings = list(synthetic_readings(12))
    write([readings[:5], readings[5:9]])
    write([readings[9:]])
    assert commits == [2, 3]  # one transaction per group
    stored = outbox.pending(0, 10)
    assert [(s.seq, s.n_readings) for s in stored] == [(1, 5), (2, 4), (3, 3)]
    payloads = [decode_payload(parse1(s.cose)[2]) for s in stored]
    assert payloads[0].prev == GENESIS_PREV
    assert [r for p in payloads for r in p.readings] == readings
    report = verify_all(key, [s.cose for s in stored])
    assert report.ok and report.batches == 3 and report.readings == 12


def test_clock_synced_comes_from_the_last_reading_of_each_batch(
    outbox: Outbox, signer: BatchSigner
) -> None:
    synced = list(synthetic_readings(2))
    unsynced = list(synthetic_readings(2, start=2, clock_synced=False))
    SigningWriter(signer, outbox)([synced, synced[:1] + unsynced[:1]])
    flags = [decode_payload(parse1(s.cose)[2]).clock_synced for s in outbox.pending(0, 10)]
    assert flags == [True, False]


def test_refused_append_raises_outbox_error_and_a_retry_resigns_from_the_head(
    tmp_path: Path, signer: BatchSigner, key: Ed25519PrivateKey
) -> None:
    class Refusing(Outbox):
        refuse = 1

        def append(self, batches: Sequence[BatchLike]) -> list[BatchLike]:
            if self.refuse:
                self.refuse -= 1
                raise OutboxError("injected: I/O error")
            return super().append(batches)

    with Refusing(tmp_path / "o.db", cap_bytes=1 << 20) as box:
        write = SigningWriter(signer, box)
        group = [list(synthetic_readings(3))]
        with pytest.raises(OutboxError, match="injected"):
            write(group)
        assert box.head.seq == 0
        write(group)
        write([list(synthetic_readings(2, start=3))])
        stored = box.pending(0, 10)
        assert [s.seq for s in stored] == [1, 2]
        assert verify_all(key, [s.cose for s in stored]).ok


def test_gap_signer_signs_the_drop_run_onto_the_given_head(signer: BatchSigner) -> None:
    prev = bytes(range(32))
    run = drop_plan([(2, 4)], 30, 10, 20)
    gap = make_gap_signer(signer, clock_synced=lambda: False)(7, prev, run)
    assert (gap.seq, gap.kind, gap.n_readings) == (8, "gap", 0)
    p = decode_payload(parse1(gap.cose)[2])
    assert (p.seq, p.prev, p.clock_synced) == (8, prev, False)
    assert p.gap == GapNotice(((2, 4),), 30, 10, 20, GAP_REASON)
    other = make_gap_signer(signer, reason="operator_purge")(4, GENESIS_PREV, run)
    assert decode_payload(parse1(other.cose)[2]).gap == GapNotice(
        ((2, 4),), 30, 10, 20, "operator_purge"
    )
