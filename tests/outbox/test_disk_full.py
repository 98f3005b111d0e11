"""The outbox on a real small filesystem: the cap is the footprint on disk, a disk smaller than the
cap or filled by someone else makes it drop (signed) rather than fail, batches held for the broker
are never dropped, and a failing disk only ever raises OutboxError and shows in the health."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.errors import OutboxError
from edge_agent.outbox.store import Outbox
from edge_agent.outbox.writer import make_gap_signer
from edge_agent.trust.batch import BatchSigner, decode_payload
from edge_agent.trust.cose import parse1
from tests.outbox.chains import sign_chain, verify_all
from tests.support_disk import fill, free_bytes, small_fs

MIB = 1 << 20


def _claims(box: Outbox) -> set[int]:
    out: set[int] = set()
    for b in box.pending(0, 100_000):
        if b.kind == "gap":
            g = decode_payload(parse1(b.cose)[2]).gap
            assert g is not None
            out.update(g.seqs())
    return out


@pytest.mark.timeout(60)
def test_disk_smaller_than_the_cap_drops_instead_of_failing(
    tmp_path: Path, key: Ed25519PrivateKey, signer: BatchSigner
) -> None:
    with small_fs(tmp_path / "fs", 2 * MIB) as fs, Outbox(
        fs / "o.db", cap_bytes=64 * MIB, gap_signer=make_gap_signer(signer)
    ) as box:
        for _ in range(1500):  # ~5 MB of signed batches onto a 2 MiB disk
            box.append(sign_chain(signer, box, 1, per_batch=200))
        st = box.stats()
        assert st.commit_error is None and box.health.failures == 0
        assert st.footprint_bytes <= 2 * MIB and st.budget_bytes < 2 * MIB
        assert st.gaps > 0 and st.reserve_held
        assert st.footprint_bytes >= 0.6 * 2 * MIB  # and it does use the disk it has
        kept = [b.cose for b in box.pending(0, 100_000)]
        report = verify_all(key, kept)
        assert report.gaps_unexplained == 0 and report.broken_chain == 0 and report.forged == 0
        assert report.readings + st.readings_dropped == 1500 * 200


@pytest.mark.timeout(60)
def test_disk_filled_by_another_file_releases_the_reserve_and_keeps_going(
    tmp_path: Path, key: Ed25519PrivateKey, signer: BatchSigner
) -> None:
    with small_fs(tmp_path / "fs", 4 * MIB) as fs, Outbox(
        fs / "o.db", cap_bytes=3 * MIB, gap_signer=make_gap_signer(signer)
    ) as box:
        for _ in range(100):
            box.append(sign_chain(signer, box, 1, per_batch=200))
        fill(fs / "logs")  # someone else takes every free byte
        assert free_bytes(fs) == 0
        for _ in range(400):  # none of these may fail: old batches make room
            box.append(sign_chain(signer, box, 1, per_batch=200))
        box.ack([b.seq for b in box.pending(0, 20)])  # acks still commit
        st = box.stats()
        assert st.commit_error is None and st.gaps > 0
        assert box.reserve.releases >= 1 or st.reserve_held
        report = verify_all(key, [b.cose for b in box.pending(0, 100_000)])
        assert report.gaps_unexplained == 0 and report.broken_chain == 0
        (fs / "logs").unlink()  # the disk frees: the reserve comes back
        assert box.reserve.ensure(force=True) and box.stats().reserve_held


@pytest.mark.timeout(60)
def test_batches_held_for_the_broker_are_never_dropped(
    tmp_path: Path, signer: BatchSigner
) -> None:
    with small_fs(tmp_path / "fs", 2 * MIB) as fs, Outbox(
        fs / "o.db", cap_bytes=2 * MIB, gap_signer=make_gap_signer(signer)
    ) as box:
        box.append(sign_chain(signer, box, 40, per_batch=200))
        box.hold_through(30)  # 1..30 may have reached the broker
        for _ in range(1000):
            box.append(sign_chain(signer, box, 1, per_batch=200))
        claims = _claims(box)
        assert claims and min(claims) > 30  # dropped: only batches the broker never saw
        assert [b.seq for b in box.pending(0, 30)] == list(range(1, 31))
    with Outbox(tmp_path / "again.db", cap_bytes=MIB) as other:
        other.append(sign_chain(signer, other, 10))
        other.hold_through(7)
    with Outbox(tmp_path / "again.db", cap_bytes=MIB) as other:
        assert other.held_through == 7  # durable (up to the head: none above it was published)


@pytest.mark.timeout(60)
def test_no_room_at_all_raises_outbox_error_and_shows_until_it_recovers(
    tmp_path: Path, signer: BatchSigner
) -> None:
    with small_fs(tmp_path / "fs", 4 * MIB) as fs, Outbox(
        fs / "o.db", cap_bytes=2 * MIB, gap_signer=make_gap_signer(signer)
    ) as box:
        box.append(sign_chain(signer, box, 5))
        # the worst case: the WAL truncated to nothing, the reserve gone, not one byte free
        side = sqlite3.connect(box.path)
        side.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        side.close()
        box.reserve.release()
        fill(fs / "logs")
        with pytest.raises(OutboxError, match="ack failed: database or disk is full"):
            box.ack([1])
        with pytest.raises(OutboxError, match="append failed"):
            box.append(sign_chain(signer, box, 1))
        with pytest.raises(OutboxError, match="hold failed"):
            box.hold_through(3)
        st = box.stats()
        assert st.commit_error and st.commit_failing_s is not None and not st.reserve_held
        (fs / "logs").unlink()
        assert box.ack([1]) == 1
        box.append(sign_chain(signer, box, 1))
        box.hold_through(3)
        st = box.stats()
        assert st.commit_error is None and st.commit_failing_s is None
        assert [b.seq for b in box.pending(0, 10)] == [2, 3, 4, 5, 6]


@pytest.mark.timeout(60)
def test_a_drop_that_frees_no_page_goes_on_to_the_alarms_instead_of_failing(
    tmp_path: Path, key: Ed25519PrivateKey, signer: BatchSigner
) -> None:
    # two alarm batches in every three, ~350-byte rows in 1 KiB pages: every leaf of the table
    # keeps an alarm row, so dropping ALL the plain batches frees no page and the append (new
    # rows and the gap notice at the table's end) still grows the file over the disk. The drop
    # must go on to the oldest alarms, not retry the same plain drop until the tries run out
    # (which failed every commit: "append failed after 8 tries: 1200 bytes over budget")
    with small_fs(tmp_path / "fs", 320 * 1024) as fs, Outbox(
        fs / "o.db", cap_bytes=MIB, gap_signer=make_gap_signer(signer)
    ) as box:
        box.append(sign_chain(signer, box, 3, per_batch=5, alarm_at=(0, 2)))
        box.hold_through(3)
        for _ in range(299):
            box.append(sign_chain(signer, box, 3, per_batch=5, alarm_at=(0, 2)))
        st = box.stats()
        assert st.commit_error is None and box.health.failures == 0
        assert st.gaps > 0 and st.batches_dropped > 300  # alarms too: the disk needed it
        assert [b.seq for b in box.pending(0, 3)] == [1, 2, 3]  # held ones kept
        report = verify_all(key, [b.cose for b in box.pending(0, 100_000)])
        assert report.gaps_unexplained == 0 and report.broken_chain == 0 and report.forged == 0
        assert report.readings + st.readings_dropped == 900 * 5
