"""The SQL of ``Outbox.rewrite_pending``: every waiting batch replaced inside the caller's write
transaction (outbox/rechain.py moves the chain past a witnessed seq this way).

The new batches all lie above the old head, so they are inserted while the old ones are read page
by page; each page of old rows is deleted as soon as it is read, before its re-signed rows are
inserted: memory holds one page, SQLite reuses the freed pages inside the transaction, so the
database file does not grow (the re-signed rows are the same size, give or take a few bytes), no
temporary file is needed. The WAL holds the whole rewrite until the commit.

The database must not grow past what the disk leaves beside that WAL: the checkpoint after the
commit copies the new pages into the database file, and one that cannot extend it on a full disk
never completes, so the WAL is never restarted and every later commit (append, ack, hold) fails
for want of space: the outbox is wedged for good. ``rewrite_rows`` caps the growth
(``may_grow``); past it the rewrite fails with SQLITE_FULL and nothing changes (rechain then drops
more and tries again).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Iterator

from edge_agent.errors import OutboxError
from edge_agent.outbox.records import BatchLike, Head, StoredBatch
from edge_agent.outbox.schema import INSERT, PAGE_SIZE, row
from edge_agent.outbox.space import Footprint

# (head, number of waiting batches, the waiting batches in seq order, the waiting gap notices
# among them) -> the replacement chain
Rewrite = Callable[[Head, int, Iterator[StoredBatch], list[StoredBatch]], Iterable[BatchLike]]
PAGE = 256
WAL_FACTOR = 3  # WAL bytes a rewrite takes per byte of waiting batches (old pages, new, slack)


def may_grow(fp: Footprint, reserve: int, waiting: int) -> int:
    """Pages the database may grow by in a rewrite of ``waiting`` bytes: what the disk has free
    (with the ``reserve`` file, which a full commit releases, and the WAL file, whose blocks a
    restarted WAL reuses) beyond the WAL of the rewrite."""
    if fp.fs_free < 0:
        return 1 << 30  # free space unknown: no cap
    return max(0, fp.fs_free + reserve + fp.wal - WAL_FACTOR * waiting) // PAGE_SIZE


def _waiting(conn: sqlite3.Connection, upto: int, page: int = PAGE) -> Iterator[StoredBatch]:
    """The batches with seq <= ``upto``; a page is deleted when the next one is fetched."""
    after = 0
    while True:
        rows = conn.execute(
            "SELECT seq, cose, kind, n_readings, alarm, t_first, t_last FROM batches"
            " WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
            (after, upto, page),
        ).fetchall()
        if not rows:
            return
        last = int(rows[-1][0])
        # deleted before their re-signed rows go in: those reuse the pages freed here
        conn.execute("DELETE FROM batches WHERE seq > ? AND seq <= ?", (after, last))
        for r in rows:
            yield StoredBatch(int(r[0]), bytes(r[1]), str(r[2]), int(r[3]), bool(r[4]), r[5], r[6])
        if len(rows) < page:
            return
        after = last


def rewrite_rows(
    conn: sqlite3.Connection, where: str, head: Head, depth: int, rewrite: Rewrite, grow: int
) -> tuple[Head, int, int, int]:
    """Inside an open write transaction: (new head, depth, readings, bytes) after the rewrite.
    The database grows by at most ``grow`` pages (``may_grow``): past that SQLITE_FULL."""
    cap = int(conn.execute("PRAGMA max_page_count").fetchone()[0])
    pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
    conn.execute(f"PRAGMA max_page_count = {min(cap, pages + grow)}")
    try:
        return _rows(conn, where, head, depth, rewrite)
    finally:
        conn.execute(f"PRAGMA max_page_count = {cap}")


def _rows(
    conn: sqlite3.Connection, where: str, head: Head, depth: int, rewrite: Rewrite
) -> tuple[Head, int, int, int]:
    new: Head | None = None
    notices = [StoredBatch(int(r[0]), bytes(r[1]), str(r[2]), int(r[3]), bool(r[4]), r[5], r[6])
               for r in conn.execute(
                   "SELECT seq, cose, kind, n_readings, alarm, t_first, t_last FROM batches"
                   " WHERE kind = 'gap' AND seq <= ? ORDER BY seq", (head.seq,))]  # fmt: skip
    for b in rewrite(head, depth, _waiting(conn, head.seq), notices):
        floor = head.seq if new is None else new.seq
        if b.seq <= floor:
            raise OutboxError(f"{where}: rewrite seq {b.seq} not above seq {floor}")
        conn.execute(INSERT, row(b))
        new = Head(b.seq, b.digest)
    if new is None:
        raise OutboxError(f"{where}: a rewrite must leave at least one batch")
    conn.execute("DELETE FROM batches WHERE seq <= ?", (head.seq,))
    conn.execute("UPDATE head SET seq=?, prev=? WHERE id = 0", (new.seq, new.prev))
    n, readings, total = conn.execute(
        "SELECT count(*), coalesce(sum(CASE kind WHEN 'data' THEN n_readings ELSE 0 END), 0),"
        " coalesce(sum(bytes), 0) FROM batches"
    ).fetchone()
    return new, int(n), int(readings), int(total)
