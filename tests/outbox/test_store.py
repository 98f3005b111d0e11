"""The SQLite outbox with real files: ordering, acks, head persistence, byte cap and gap notices."""

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


def test_append_pending_ack_in_seq_order(outbox: Outbox, signer: BatchSigner) -> None:
    batches = sign_chain(signer, outbox, 5)
    assert outbox.append(batches[:2]) == []
    outbox.append(batches[2:])
    assert outbox.head.seq == 5 and outbox.head.prev == batches[-1].digest
    got = outbox.pending(after_seq=0, limit=100)
    assert [b.seq for b in got] == [1, 2, 3, 4, 5]
    assert [b.cose for b in got] == [b.cose for b in batches]
    assert [b.seq for b in outbox.pending(after_seq=3, limit=1)] == [4]
    assert outbox.ack([1, 3]) == 2
    assert outbox.ack([1]) == 0  # already gone: a duplicate PUBACK is harmless
    assert [b.seq for b in outbox.pending(0, 10)] == [2, 4, 5]
    st = outbox.stats()
    assert (st.depth, st.readings) == (3, 30)
    assert st.bytes == sum(len(b.cose) for b in batches if b.seq in (2, 4, 5))


def test_append_refuses_seq_not_following_head(outbox: Outbox, signer: BatchSigner) -> None:
    batches = sign_chain(signer, outbox, 3)
    with pytest.raises(OutboxError, match=r"append seq 2 does not follow head seq 0"):
        outbox.append(batches[1:])
    with pytest.raises(OutboxError, match=r"seq 3 does not follow head seq 1"):
        outbox.append([batches[0], batches[2]])
    assert outbox.head.seq == 0 and outbox.pending(0, 10) == []  # nothing half-committed


def test_head_survives_reopen_even_when_everything_was_acked(
    tmp_path: Path, key: Ed25519PrivateKey, signer: BatchSigner
) -> None:
    path = tmp_path / "o.db"
    with Outbox(path, cap_bytes=1 << 20) as box:
        batches = sign_chain(signer, box, 4)
        box.append(batches)
        box.ack([4, 2])  # out of order, newest first: head row must take over
        box.ack([1, 3])
        assert box.stats().depth == 0
    with Outbox(path, cap_bytes=1 << 20) as box:
        assert box.head.seq == 4 and box.head.prev == batches[-1].digest
        more = sign_chain(signer, box, 2)
        box.append(more)
        assert [b.seq for b in box.pending(0, 10)] == [5, 6]
    with Outbox(path, cap_bytes=1 << 20) as box:
        box.ack([6])  # newest acked, 5 still waiting: reopen must still resume at 6
    with Outbox(path, cap_bytes=1 << 20) as box:
        assert box.head.seq == 6 and box.head.prev == more[-1].digest
        assert [b.seq for b in box.pending(0, 10)] == [5]
    report = verify_all(key, [b.cose for b in batches + more])
    assert report.ok and report.batches == 6


def test_open_names_the_file_on_garbage(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(OutboxError, match=r"junk\.db: cannot open outbox"):
        Outbox(path, cap_bytes=1 << 20)


def test_uses_wal_and_full_sync(outbox: Outbox, signer: BatchSigner) -> None:
    outbox.append(sign_chain(signer, outbox, 1))
    conn = sqlite3.connect(outbox.path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()
    assert Path(f"{outbox.path}-wal").exists()


def test_cap_drops_oldest_non_alarm_first_with_one_merged_gap_notice(
    tmp_path: Path, key: Ed25519PrivateKey, signer: BatchSigner
) -> None:
    path = tmp_path / "small.db"
    cap = 256 * 1024
    box = Outbox(path, cap_bytes=cap, gap_signer=make_gap_signer(signer))
    sent: list[bytes] = []
    try:
        for i in range(400):
            (b,) = sign_chain(signer, box, 1, per_batch=20, alarm_at=(0,) if i == 2 else ())
            gaps = box.append([b])
            st = box.stats()
            # the real files, not just the payload, stay under the cap
            assert st.used_bytes <= cap and st.footprint_bytes <= cap, st
            sent.append(b.cose)
            sent.extend(g.cose for g in gaps)
        st = box.stats()
        assert st.gaps >= 1 and st.batches_dropped >= 100
        assert (
            st.readings_dropped
            == 20 * sum(1 for b in sent if decode_payload(parse1(b)[2]).kind == "data")
            - st.readings
        )
        kept = box.pending(0, 1000)
        assert 3 in [b.seq for b in kept]  # the alarm batch survived while older data went
        assert kept[0].seq == 3  # everything older than the alarm batch was dropped
        gap_payloads = [decode_payload(parse1(b.cose)[2]) for b in kept if b.kind == "gap"]
        assert gap_payloads and all(p.gap and p.gap.reason == "outbox_full" for p in gap_payloads)
        # the consumer only gets what is still in the outbox: every hole is explained
        report = verify_all(key, [b.cose for b in kept])
        assert report.gaps_unexplained == 0 and report.broken_chain == 0 and report.forged == 0
        # each drop merged the notice before it: ONE notice names every dropped seq (those of
        # the notices it replaced too), around the kept alarm batch, with all their readings
        (gap,) = [p.gap for p in gap_payloads]
        assert gap is not None and st.gaps > 1 and gap.ranges[0] == (1, 2)
        assert gap.ranges[1][0] == 4 and not gap.covers(3)
        stored = {b.seq for b in kept}
        assert set(gap.seqs()) == set(range(1, st.head_seq + 1)) - stored
        assert report.readings_dropped == st.readings_dropped
    finally:
        box.close()
    with Outbox(path, cap_bytes=cap, gap_signer=make_gap_signer(signer)) as again:
        assert again.stats().batches_dropped == st.batches_dropped  # counters are persisted
        assert again.stats().readings_dropped == st.readings_dropped


def test_full_without_gap_signer_refuses_and_keeps_everything(
    tmp_path: Path, signer: BatchSigner
) -> None:
    with Outbox(tmp_path / "o.db", cap_bytes=256 * 1024) as box:
        box.append(sign_chain(signer, box, 1, per_batch=20))
        before = box.stats()
        with pytest.raises(OutboxError, match="no gap signer"):
            for _ in range(1000):
                box.append(sign_chain(signer, box, 1, per_batch=20))
        assert box.stats().depth >= before.depth
        assert box.stats().batches_dropped == 0
        assert box.stats().commit_error is not None  # a failing append shows


def test_cap_too_small_or_group_larger_than_cap_is_refused(
    tmp_path: Path, signer: BatchSigner
) -> None:
    with pytest.raises(OutboxError, match=r"outbox cap 1000 is too small"):
        Outbox(tmp_path / "tiny.db", cap_bytes=1000)
    with (
        Outbox(tmp_path / "o.db", cap_bytes=200 * 1024) as box,
        pytest.raises(OutboxError, match=r"exceed outbox\.cap_bytes 204800"),
    ):
        box.append(sign_chain(signer, box, 20, per_batch=200))


def test_stats_measure_real_disk_writes(outbox: Outbox, signer: BatchSigner) -> None:
    for _ in range(20):
        outbox.append(sign_chain(signer, outbox, 1, per_batch=100))
    st = outbox.stats()
    cose = sum(len(b.cose) for b in outbox.pending(0, 100))
    assert st.readings_appended == 2000 and st.file_bytes > cose
    assert st.bytes_written >= cose  # the kernel saw at least the payload go to disk
    assert st.written_per_reading == st.bytes_written / 2000
    assert st.oldest_age_s >= 0.0
