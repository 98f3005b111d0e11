"""The SQL of ``Outbox.rewrite_pending``: every waiting batch replaced inside the caller's write
transaction (outbox/rechain.py moves the chain past a witnessed seq this way).

The new batches all lie above the old head, so they are inserted while the old ones are read page
by page, and each page of old rows is deleted once the rewrite moved past it: memory holds one
page, the database file grows by little more than a page (SQLite reuses the freed pages inside
the transaction), no temporary file is needed. The WAL holds the whole rewrite until the commit.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Iterator

from edge_agent.errors import OutboxError
from edge_agent.outbox.records import BatchLike, Head, StoredBatch
from edge_agent.outbox.schema import INSERT, row

# (head, number of waiting batches, the waiting batches in seq order, the waiting gap notices
# among them) -> the replacement chain
Rewrite = Callable[[Head, int, Iterator[StoredBatch], list[StoredBatch]], Iterable[BatchLike]]
PAGE = 256


def _waiting(conn: sqlite3.Connection, upto: int, page: int = PAGE) -> Iterator[StoredBatch]:
    """The batches with seq <= ``upto``; a page is deleted when the next one is fetched."""
    after = 0
    while True:
        rows = conn.execute(
            "SELECT seq, cose, kind, n_readings, alarm, t_first, t_last FROM batches"
            " WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
            (after, upto, page),
        ).fetchall()
        for r in rows:
            yield StoredBatch(int(r[0]), bytes(r[1]), str(r[2]), int(r[3]), bool(r[4]), r[5], r[6])
        if len(rows) < page:
            return
        last = int(rows[-1][0])
        conn.execute("DELETE FROM batches WHERE seq > ? AND seq <= ?", (after, last))
        after = last


def rewrite_rows(
    conn: sqlite3.Connection, where: str, head: Head, depth: int, rewrite: Rewrite
) -> tuple[Head, int, int, int]:
    """Inside an open write transaction: (new head, depth, readings, bytes) after the rewrite."""
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
