"""The uplink against a real mosquitto with its outbox on a real, full filesystem: acks that cannot
commit never end the session, are not sent again, and commit once the disk frees; nothing past the
held mark is published while the mark cannot move."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.outbox.store import Outbox
from edge_agent.outbox.writer import make_gap_signer
from edge_agent.trust.batch import BatchSigner
from tests.outbox.chains import verify_all
from tests.support_broker import Mosquitto
from tests.support_disk import fill, small_fs
from tests.uplink.conftest import MakeSub, MakeUplink
from tests.uplink.streams import append_batches, seq_of

MIB = 1 << 20


def _no_room_at_all(box: Outbox, fs: Path) -> None:
    """WAL truncated to nothing, reserve released, not one byte free: every commit fails."""
    side = sqlite3.connect(box.path)
    side.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    side.close()
    box.reserve.release()
    fill(fs / "logs")


@pytest.mark.timeout(60)
def test_acks_that_cannot_commit_wait_in_memory_and_the_session_lives(
    tmp_path: Path, broker: Mosquitto, signer: BatchSigner, subscribe: MakeSub,
    make_uplink: MakeUplink,
) -> None:  # fmt: skip
    with small_fs(tmp_path / "fs", 4 * MIB) as fs:
        box = Outbox(fs / "o.db", cap_bytes=2 * MIB, gap_signer=make_gap_signer(signer))
        try:
            append_batches(signer, box, 40)
            box.hold_through(40)  # published earlier, say: the mark need not move
            _no_room_at_all(box, fs)
            sub = subscribe(broker.port)
            up = make_uplink(broker.port, box=box)
            assert sub.wait_for(lambda: len(sub.payloads()) >= 40, 10)
            assert sub.wait_for(lambda: up.stats.ack_pending == 40, 10), up.stats
            time.sleep(2.0)  # retries fail meanwhile
            st = box.stats()
            assert st.depth == 40 and st.commit_error and "ack failed" in st.commit_error
            assert up.stats.ack_failures >= 2 and up.stats.sessions == 1 and up.alive
            assert sorted(seq_of(p) for p in sub.payloads()) == list(range(1, 41))  # not resent
            (fs / "logs").unlink()  # the disk frees: the acks commit
            assert up.wait_drained(15), up.stats
            assert up.stats.ack_pending == 0 and box.stats().commit_error is None
            assert up.stats.sessions == 1
            up.stop()
        finally:
            box.close()


@pytest.mark.timeout(60)
def test_nothing_past_the_held_mark_is_published_until_the_mark_commits(
    tmp_path: Path, broker: Mosquitto, signer: BatchSigner, subscribe: MakeSub,
    make_uplink: MakeUplink,
) -> None:  # fmt: skip
    with small_fs(tmp_path / "fs", 4 * MIB) as fs:
        box = Outbox(fs / "o.db", cap_bytes=2 * MIB, gap_signer=make_gap_signer(signer))
        try:
            append_batches(signer, box, 10)
            box.hold_through(4)
            _no_room_at_all(box, fs)
            sub = subscribe(broker.port)
            up = make_uplink(broker.port, box=box)
            assert sub.wait_for(lambda: len(sub.payloads()) >= 4, 10)
            time.sleep(1.5)
            assert sorted(seq_of(p) for p in sub.payloads()) == [1, 2, 3, 4]
            assert box.held_through == 4 and up.alive
            (fs / "logs").unlink()
            assert up.wait_drained(15), up.stats
            assert sorted({seq_of(p) for p in sub.payloads()}) == list(range(1, 11))
            assert box.held_through >= 10
            up.stop()
        finally:
            box.close()


@pytest.mark.timeout(60)
def test_a_drop_racing_the_held_mark_never_makes_a_published_batch_a_named_one(
    tmp_path: Path, broker: Mosquitto, signer: BatchSigner, key: Ed25519PrivateKey,
    subscribe: MakeSub, make_uplink: MakeUplink,
) -> None:  # fmt: skip
    """The uplink reads waiting batches, then moves the held mark; an append that commits in
    between drops the very batches it read (they were not held yet). Only what is read after the
    mark moved may go out: nothing published is ever named in a gap notice."""

    class Racy(Outbox):
        raced = False

        def hold_through(self, seq: int) -> None:
            if not Racy.raced:  # the batcher's append lands between the read and the mark
                Racy.raced = True
                append_batches(signer, self, 400)
            super().hold_through(seq)

    box = Racy(tmp_path / "o.db", cap_bytes=256 * 1024, gap_signer=make_gap_signer(signer))
    try:
        append_batches(signer, box, 100)
        sub = subscribe(broker.port)
        up = make_uplink(broker.port, box=box)
        assert up.wait_drained(20), up.stats
        assert Racy.raced and box.stats().batches_dropped > 0
        report = verify_all(key, sub.payloads())
        assert report.contradicted == 0 and report.gaps_unexplained == 0, report.problems
        assert report.ok
        up.stop()
    finally:
        box.close()
