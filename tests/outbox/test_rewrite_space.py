"""The rechain rewrite and the disk: the re-signed tail goes into the pages the old rows free, and
the database never grows past what the disk leaves beside the WAL of the rewrite. (A rewrite that
grew the file on a full disk left a WAL whose checkpoint could never complete: no commit, append,
ack or hold, ever succeeded again — the e2e rollback test on a tiny disk saw it.)"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.outbox.rechain import rechain
from edge_agent.outbox.records import BatchLike, Head, StoredBatch
from edge_agent.outbox.rewrite import WAL_FACTOR, Rewrite, may_grow, rewrite_rows
from edge_agent.outbox.schema import PAGE_SIZE, connect, is_full
from edge_agent.outbox.space import Footprint
from edge_agent.outbox.store import Outbox
from edge_agent.outbox.writer import make_gap_signer
from edge_agent.trust.batch import BatchSigner, ChainHead
from simulators.synthetic import synthetic_readings
from tests.outbox.chains import sign_chain, verify_all


def _open(path: Path, signer: BatchSigner) -> Outbox:
    return Outbox(path, cap_bytes=64 * 1024 * 1024, gap_signer=make_gap_signer(signer))


def _pages(db: Path) -> int:
    c = sqlite3.connect(db)
    try:
        return int(c.execute("PRAGMA page_count").fetchone()[0])
    finally:
        c.close()


@pytest.mark.parametrize("n", [40, 150, 300])
def test_the_rewrite_reuses_the_pages_it_frees(
    tmp_path: Path, key: Ed25519PrivateKey, signer: BatchSigner, n: int
) -> None:
    """Fewer waiting batches than one rewrite page (256) were all inserted before any old row was
    deleted: the file grew by the whole tail. Now each page of old rows goes first."""
    db = tmp_path / "o.db"
    with _open(db, signer) as box:
        box.append(sign_chain(signer, box, n))  # a fresh file: no free pages to grow into
        pages = _pages(db)
        done = rechain(box, signer, n + 50, b"\x01" * 32)
        grown = _pages(db) - pages
        tail = [b.cose for b in box.pending(0, 1000)]
    assert (done.notice_seq, done.head, len(tail)) == (n + 51, 2 * n + 51, n + 1)
    # the resume notice and a byte or two more per re-signed seq: at most a page or two
    assert grown <= 2, (pages, grown)
    report = verify_all(key, tail)
    assert report.ok and report.broken_chain == 0 and report.batches == n + 1


def _bigger(signer: BatchSigner) -> Rewrite:
    """A rewrite whose batches carry four times the readings (so the file must grow)."""

    def rewrite(
        head: Head, depth: int, waiting: Iterator[StoredBatch], notices: list[StoredBatch]
    ) -> Iterator[BatchLike]:
        chain = ChainHead(head.seq, head.prev)
        for i, _ in enumerate(waiting):
            b = signer.sign_readings(chain, list(synthetic_readings(40, start=i * 40)),
                                     created_ns=0, clock_synced=True)  # fmt: skip
            chain = BatchSigner.next_head(b)
            yield b

    return rewrite


def test_a_rewrite_that_would_grow_past_its_cap_fails_full_and_changes_nothing(
    tmp_path: Path, signer: BatchSigner
) -> None:
    db = tmp_path / "o.db"
    with _open(db, signer) as box:
        box.append(sign_chain(signer, box, 60))
        head, depth = box.head, box.stats().depth
    pages = _pages(db)
    conn = connect(db, 1 << 20)
    try:
        cap = conn.execute("PRAGMA max_page_count").fetchone()[0]
        conn.execute("BEGIN IMMEDIATE")
        with pytest.raises(sqlite3.Error) as err:
            rewrite_rows(conn, str(db), head, depth, _bigger(signer), 0)
        assert is_full(err.value)
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        assert conn.execute("PRAGMA max_page_count").fetchone()[0] == cap  # the cap is undone
        assert _pages(db) == pages
        conn.execute("BEGIN IMMEDIATE")  # with room to grow it goes through
        new, n, _, _ = rewrite_rows(conn, str(db), head, depth, _bigger(signer), 1 << 20)
        conn.execute("COMMIT")
        assert (new.seq, n) == (120, 60) and _pages(db) > pages
    finally:
        conn.close()
    with _open(db, signer) as box:
        assert box.head.seq == 120 and [b.seq for b in box.pending(0, 1)] == [61]


def test_may_grow_leaves_the_wal_of_the_rewrite_its_room() -> None:
    def fp(wal: int, free: int) -> Footprint:
        return Footprint(db=1 << 20, wal=wal, shm=32768, journal=0, reserve=0, fs_free=free)

    waiting = 50_000
    assert may_grow(fp(43_000, 20_480), 65_536, waiting) == 0  # the tiny disk of the e2e test
    room = 10 * PAGE_SIZE + WAL_FACTOR * waiting
    assert may_grow(fp(0, room), 0, waiting) == 10
    assert may_grow(fp(4 * PAGE_SIZE, room - 4 * PAGE_SIZE), 0, waiting) == 10  # WAL blocks reused
    assert may_grow(fp(0, room - 65_536), 65_536, waiting) == 10  # the reserve a commit releases
    assert may_grow(fp(0, -1), 0, waiting) >= 1 << 30  # free space unknown: no cap
