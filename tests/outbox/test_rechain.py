"""Anti-rollback on real SQLite files: a restored outbox moves its chain past the witnessed seq with
a signed resume notice, atomically, and the consumer sees no seq signed twice."""

from __future__ import annotations

import logging
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.errors import HeadMoved, OutboxError, VerifyError
from edge_agent.outbox.rechain import ChainGuard, continues, rechain
from edge_agent.outbox.rewrite import PAGE
from edge_agent.outbox.store import Outbox
from edge_agent.outbox.writer import SigningWriter, make_gap_signer
from edge_agent.trust.batch import BatchSigner, ChainHead, SignedBatch, decode_payload
from edge_agent.trust.cose import parse1
from edge_agent.trust.witness import Witness, read_witness, sign_witness
from simulators.synthetic import synthetic_readings
from tests.outbox.chains import GATEWAY, drop_plan, sign_chain, verify_all
from tests.support_disk import small_fs


def _open(path: Path, signer: BatchSigner) -> Outbox:
    return Outbox(path, cap_bytes=64 * 1024 * 1024, gap_signer=make_gap_signer(signer))


def _copy_state(src: Path, dst: Path) -> None:
    dst.mkdir()
    for f in src.iterdir():
        shutil.copy2(f, dst / f.name)


def _published(box: Outbox, n: int, signer: BatchSigner) -> list[bytes]:
    """Append ``n`` batches and "publish" them: acked, returned as the consumer got them."""
    batches = sign_chain(signer, box, n)
    box.append(batches)
    box.ack([b.seq for b in batches])
    return [b.cose for b in batches]


def test_restored_outbox_moves_past_the_witness(
    tmp_path: Path, key: Ed25519PrivateKey, signer: BatchSigner
) -> None:
    live = tmp_path / "state"
    live.mkdir()
    wire: list[bytes] = []
    with _open(live / "outbox.db", signer) as box:
        wire += _published(box, 5, signer)
        unacked = sign_chain(signer, box, 3)  # 6..8 waiting when the copy is taken
        box.append(unacked)
    _copy_state(live, tmp_path / "copy")
    with _open(live / "outbox.db", signer) as box:
        for b in box.pending(0, 10):
            wire.append(b.cose)
        box.ack([6, 7, 8])
        wire += _published(box, 12, signer)  # the earlier state reaches seq 20
        witness = (box.head.seq, box.head.prev)
    assert witness[0] == 20
    shutil.rmtree(live)
    shutil.move(tmp_path / "copy", live)  # restore the older copy (head 8)
    with _open(live / "outbox.db", signer) as box:
        SigningWriter(signer, box)([list(synthetic_readings(7, start=900))] * 4)  # offline: 9..12
        stale_writer_batch = sign_chain(signer, box, 1)[0]  # signed from head 12, not appended
        assert box.head.seq == 12 and not continues(box, *witness)
        done = rechain(box, signer, *witness)
        assert (done.notice_seq, done.from_seq, done.local_head, done.resigned) == (21, 6, 12, 7)
        assert box.head.seq == done.head == 28
        assert continues(box, *witness)  # a second connect finds nothing to do
        with pytest.raises(HeadMoved, match="does not follow head"):
            box.append([stale_writer_batch])  # a writer racing the move must re-sign
        SigningWriter(signer, box)([list(synthetic_readings(3, start=990))])  # seq 29
        tail = box.pending(0, 100)
    assert [b.seq for b in tail] == list(range(21, 30))
    notice = decode_payload(parse1(tail[0].cose)[2])
    assert notice.kind == "resume" and notice.prev == witness[1] and notice.resume is not None
    assert (notice.resume.from_seq, notice.resume.local_head, notice.resume.resigned) == (6, 12, 7)
    moved = [decode_payload(parse1(b.cose)[2]) for b in tail[1:8]]
    originals = [decode_payload(parse1(c)[2]) for c in wire[5:8]]
    assert [p.readings for p in moved[:3]] == [p.readings for p in originals]  # 6..8 re-signed
    report = verify_all(key, wire + [b.cose for b in tail])
    assert report.ok, report.problems
    assert (report.conflicts, report.broken_chain, report.batches) == (0, 0, 29)


def test_fork_below_the_head_and_shifted_gap_notice(
    tmp_path: Path, key: Ed25519PrivateKey, signer: BatchSigner
) -> None:
    with _open(tmp_path / "a.db", signer) as box:
        wire = _published(box, 10, signer)
        witness = (box.head.seq, box.head.prev)
    with _open(tmp_path / "b.db", signer) as box:  # restored at 4, then ran on offline to 14
        _published(box, 4, signer)
        local = sign_chain(signer, box, 10)
        box.append(local)
        gap = make_gap_signer(signer)  # batches 7..8 dropped, announced by a notice at 15
        box.ack([7, 8])
        box.append([gap(box.head.seq, box.head.prev, drop_plan([(7, 8)], 20))])
        assert not continues(box, *witness)  # local 10 is not the published 10
        done = rechain(box, signer, *witness)
        # the notice goes above the local head: 11..15 were signed here, they are never reused
        assert (done.notice_seq, done.from_seq, done.local_head, done.head) == (16, 5, 15, 27)
        assert continues(box, *witness)
        tail = box.pending(0, 100)
    assert [b.seq for b in tail] == [16, 17, 18, *range(21, 28)]  # the hole moved with them
    notice = decode_payload(parse1(tail[0].cose)[2])
    assert notice.prev == witness[1] and notice.resume is not None
    moved_gap = decode_payload(parse1(tail[-1].cose)[2]).gap
    assert moved_gap is not None and (moved_gap.first_seq, moved_gap.last_seq) == (19, 20)
    report = verify_all(key, wire + [b.cose for b in tail])
    assert report.ok, report.problems
    # 11..15 explained by the resume notice (from 5), 19..20 by the moved gap notice
    assert (report.conflicts, report.gaps_explained, report.gaps_unexplained) == (0, 7, 0)
    assert (report.resumes, report.links_unchecked) == (1, 2)


def test_continues_when_nothing_was_rolled_back(
    tmp_path: Path, signer: BatchSigner
) -> None:
    with _open(tmp_path / "o.db", signer) as box:
        batches = sign_chain(signer, box, 6)
        box.append(batches)
        assert continues(box, 0, bytes(32))
        assert continues(box, 6, batches[5].digest)  # the head
        assert not continues(box, 6, bytes(32))
        assert continues(box, 3, batches[2].digest)  # a waiting batch
        assert not continues(box, 3, batches[1].digest)
        box.ack([1, 2, 3])
        assert continues(box, 3, batches[2].digest)  # acked: seq 4's prev still tells
        assert not continues(box, 3, bytes(32))
        box.ack([4, 5])
        assert continues(box, 2, bytes(32))  # acked long ago: nothing contradicts it
        assert not continues(box, 7, batches[5].digest)


def test_rewrite_failing_midway_changes_nothing(tmp_path: Path, signer: BatchSigner) -> None:
    with _open(tmp_path / "o.db", signer) as box:
        box.append(sign_chain(signer, box, 5))
        box.ack([1, 2])
        before = box.pending(0, 10)
        with pytest.raises(OutboxError, match="at least one batch"):
            box.rewrite_pending(lambda head, depth, waiting, notices: iter(()))
        with pytest.raises(OutboxError, match="not above seq 5"):
            stale = signer.sign_readings(ChainHead(2, bytes(32)), [], created_ns=0,
                                         clock_synced=True)  # seq 3: a seq already used
            box.rewrite_pending(lambda head, depth, waiting, notices: iter([stale]))
        assert box.pending(0, 10) == before and box.head.seq == 5
        assert box.stats().depth == 3


def test_guard_witness_round_trip_and_reconcile(
    tmp_path: Path, key: Ed25519PrivateKey, signer: BatchSigner, key_path: Path
) -> None:
    other = Ed25519PrivateKey.generate()
    with _open(tmp_path / "o.db", signer) as box:
        guard = ChainGuard(box, signer, key)
        box.append(sign_chain(signer, box, 3))
        seq, msg = guard.witness()
        w = read_witness(msg, key.public_key(), GATEWAY)
        assert (seq, w.seq, w.digest) == (3, 3, box.head.prev)
        with pytest.raises(VerifyError):
            read_witness(msg, other.public_key(), GATEWAY)
        with pytest.raises(VerifyError, match="for gateway"):
            read_witness(msg, key.public_key(), "gw-else")
        assert guard.reconcile(None) == 0 and guard.reconcile(b"") == 0
        forged = sign_witness(other, Witness(GATEWAY, 99, bytes(32), 0))
        assert guard.reconcile(forged) == 0 and box.head.seq == 3  # not ours: ignored
        assert guard.reconcile(msg) == 3 and guard.rechained == []
        ahead = sign_witness(key, Witness(GATEWAY, 40, b"\x07" * 32, 0))
        assert guard.reconcile(ahead) == 40
        assert [r.notice_seq for r in guard.rechained] == [41] and box.head.seq == 44


def test_a_long_tail_is_moved_page_by_page_in_place(
    tmp_path: Path, key: Ed25519PrivateKey, signer: BatchSigner
) -> None:
    with _open(tmp_path / "o.db", signer) as box:
        waiting = sign_chain(signer, box, 700)  # more than two pages of the rewrite
        box.append(waiting)
        db = sqlite3.connect(tmp_path / "o.db")
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        done = rechain(box, signer, 900, b"\x01" * 32)
        grown = db.execute("PRAGMA page_count").fetchone()[0]
        db.close()
        tail = box.pending(0, 1000)
        assert box.stats().depth == 701 and (done.notice_seq, done.head) == (901, 1601)
    assert [b.seq for b in tail] == list(range(901, 1602))
    # old pages are reused as the new batches go in: the file grows by about one rewrite page of
    # batches (PAGE = 256), not by a copy of the outbox (700 batches)
    assert grown - pages <= pages / 700 * (PAGE + 64)
    moved = [decode_payload(parse1(b.cose)[2]).readings for b in tail[1:]]
    assert moved == [decode_payload(parse1(b.cose)[2]).readings for b in waiting]
    report = verify_all(key, [b.cose for b in tail])
    assert report.ok and report.batches == 701 and report.broken_chain == 0


def _backup(src: Path, dst: Path) -> None:
    """``sqlite3 .backup``: a consistent copy of a live outbox."""
    a, b = sqlite3.connect(src), sqlite3.connect(dst)
    a.backup(b)
    a.close()
    b.close()


def test_restore_is_found_by_the_epoch_even_when_drops_removed_the_witnessed_batches(
    tmp_path: Path, key: Ed25519PrivateKey, signer: BatchSigner
) -> None:
    """The reviewer's bypass: the restored state runs offline until its outbox drops the local
    batches at the witnessed seq and the one after it, so comparing digests finds nothing to
    contradict. The witness names the run (epoch) that signed it; the restored state never knew
    that run reached the witnessed seq, and moves past it."""
    wire: list[bytes] = []
    with _open(tmp_path / "live.db", signer) as box:
        guard = ChainGuard(box, signer, key)
        wire += _published(box, 5, signer)
        _backup(tmp_path / "live.db", tmp_path / "copy.db")  # taken at seq 5
        wire += _published(box, 20, signer)
        seq, witness = guard.witness()  # what the broker retains: seq 25, this run's epoch
    assert seq == 25
    small = 256 * 1024
    with Outbox(tmp_path / "copy.db", cap_bytes=small, gap_signer=make_gap_signer(signer)) as box:
        guard = ChainGuard(box, signer, key)  # the restored daemon starts: a new epoch
        writer = SigningWriter(signer, box)
        for i in range(400):  # offline: the outbox fills and drops its oldest batches
            writer([list(synthetic_readings(20, start=i * 20))])
        waiting = {b.seq for b in box.pending(0, 10_000)}
        assert not waiting & {25, 26} and min(waiting) > 26
        w = read_witness(witness, key.public_key(), GATEWAY)
        assert continues(box, w.seq, w.digest)  # the batch-by-batch check is blind here
        assert guard.reconcile(witness) == 25
        assert len(guard.rechained) == 1 and guard.rechained[0].from_seq == 6
        tail = [b.cose for b in box.pending(0, 10_000)]
    report = verify_all(key, wire + tail)
    assert report.ok, report.problems
    assert (report.conflicts, report.contradicted, report.gaps_unexplained) == (0, 0, 0)
    assert report.resumes == 1 and report.broken_chain == 0


def test_a_witness_of_a_known_epoch_within_what_the_state_knows_is_continued(
    tmp_path: Path, key: Ed25519PrivateKey, signer: BatchSigner
) -> None:
    with _open(tmp_path / "o.db", signer) as box:
        guard = ChainGuard(box, signer, key)
        _published(box, 5, signer)
        _, old = guard.witness()
    with _open(tmp_path / "o.db", signer) as box:  # the next start: a new epoch
        guard = ChainGuard(box, signer, key)
        _published(box, 5, signer)
        assert guard.reconcile(old) == 5 and guard.rechained == []  # the last run, at seq 5
        _, now = guard.witness()
        assert guard.reconcile(now) == 10 and guard.rechained == []
        stranger = sign_witness(key, Witness(GATEWAY, 7, bytes(32), 0, b"\x05" * 16, 5))
        assert guard.reconcile(stranger) == 7  # a run this state never knew: rolled back
        assert [r.notice_seq for r in guard.rechained] == [11]
        older = sign_witness(key, Witness(GATEWAY, 3, bytes(32), 0, b"\x06" * 16, 0))
        # a run older than every run remembered (start below the oldest kept start, 0 here:
        # none can be) would be judged batch by batch; start 0 is not below 0: rolled back
        assert guard.reconcile(older) == 3 and len(guard.rechained) == 2


@pytest.mark.timeout(120)
def test_a_full_disk_drops_the_oldest_waiting_batches_before_the_rewrite(
    tmp_path: Path, key: Ed25519PrivateKey, signer: BatchSigner, caplog: pytest.LogCaptureFixture
) -> None:
    """The restored outbox fills its small disk offline; the rewrite (held whole in the WAL until
    it commits) cannot fit beside it: the oldest waiting batches go first, named in a signed gap
    notice, and the move succeeds; the consumer sees every hole explained."""
    wire: list[bytes] = []
    with _open(tmp_path / "live.db", signer) as box:
        guard = ChainGuard(box, signer, key)
        wire += _published(box, 5, signer)
        _backup(tmp_path / "live.db", tmp_path / "copy.db")
        wire += _published(box, 20, signer)
        _, witness = guard.witness()
    with small_fs(tmp_path / "fs", 512 * 1024) as fs:
        shutil.copy(tmp_path / "copy.db", fs / "o.db")
        with Outbox(fs / "o.db", cap_bytes=64 << 20, gap_signer=make_gap_signer(signer)) as box:
            guard = ChainGuard(box, signer, key)
            writer = SigningWriter(signer, box)
            for i in range(600):  # offline until the disk is the budget and drops began
                writer([list(synthetic_readings(20, start=i * 20))])
            assert box.stats().batches_dropped > 0
            caplog.set_level("WARNING", "edge_agent.outbox.rechain")
            assert guard.reconcile(witness) == 25
            assert "chain_rollback_drop" in caplog.text and len(guard.rechained) == 1
            tail = [b.cose for b in box.pending(0, 100_000)]
    report = verify_all(key, wire + tail)
    assert report.ok, report.problems
    assert (report.conflicts, report.contradicted, report.gaps_unexplained) == (0, 0, 0)
    assert report.resumes == 1 and report.gap_notices >= 1


def test_a_held_mark_past_the_head_does_not_outlive_its_process(
    tmp_path: Path, signer: BatchSigner
) -> None:
    """The uplink moves the held mark ahead of what it publishes; after a restart no batch above
    the head can have been published, so batches signed offline stay droppable (a restored
    state on a small disk was stuck otherwise: every commit 'over budget')."""
    with _open(tmp_path / "o.db", signer) as box:
        box.append(sign_chain(signer, box, 3))
        box.hold_through(3 + 32)
        assert box.held_through == 35
    with Outbox(tmp_path / "o.db", cap_bytes=256 * 1024,
                gap_signer=make_gap_signer(signer)) as box:  # fmt: skip
        assert box.held_through == 3
        writer = SigningWriter(signer, box)
        for i in range(200):
            writer([list(synthetic_readings(20, start=i * 20))])
        waiting = {b.seq for b in box.pending(0, 10_000)}
        assert {1, 2, 3} <= waiting and not waiting & set(range(4, 36))  # dropped, announced
        assert box.stats().batches_dropped >= 32


class _MovingSigner(BatchSigner):
    """A signer whose first ``sign_readings`` lets a rechain move the head meanwhile (as the
    uplink thread does at connect while the batcher thread signs)."""

    move: Callable[[], object] | None = None

    def sign_readings(self, head: ChainHead, *args: Any, **kw: Any) -> SignedBatch:
        signed = super().sign_readings(head, *args, **kw)
        move, self.move = self.move, None
        if move is not None:
            move()
        return signed


def test_a_writer_racing_a_rechain_signs_again_from_the_moved_head(
    tmp_path: Path, key: Ed25519PrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    signer = _MovingSigner(key, GATEWAY, "boot-1")
    caplog.set_level(logging.INFO)
    with _open(tmp_path / "outbox.db", signer) as box:
        box.append(sign_chain(signer, box, 4))  # 1..4 waiting
        signer.move = lambda: rechain(box, signer, 10, b"\x22" * 32)  # witness at 10
        SigningWriter(signer, box)([list(synthetic_readings(3, start=500))] * 2)
        tail = box.pending(0, 100)
        loss_head = box.head.seq
    # notice 11, 1..4 moved to 12..15, the writer's two batches re-signed as 16 and 17
    assert [b.seq for b in tail] == list(range(11, 18)) and loss_head == 17
    report = verify_all(key, [b.cose for b in tail])
    assert report.ok and report.broken_chain == 0, report.problems
    assert "batch_resigned reason=head_moved from_seq=5 to_seq=16" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
