"""The SQL of ``Outbox.rewrite_pending``: every waiting batch replaced inside the caller's write
transaction (outbox/rechain.py moves the chain past a witnessed seq this way).

The new batches are staged in a TEMP table while the old ones are read page by page, then swap
places with them; the head row takes the new head. Memory stays at one page of batches whatever
the outbox holds.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Iterator

from edge_agent.errors import OutboxError
from edge_agent.outbox.records import BatchLike, Head, StoredBatch
from edge_agent.outbox.schema import INSERT, row

# (head, number of waiting batches, the waiting batches in seq order) -> the replacement chain
Rewrite = Callable[[Head, int, Iterator[StoredBatch]], Iterable[BatchLike]]
PAGE = 256


def waiting(conn: sqlite3.Connection, page: int = PAGE) -> Iterator[StoredBatch]:
    after = 0
    while True:
        rows = conn.execute(
            "SELECT seq, cose, kind, n_readings, alarm, t_first, t_last FROM batches"
            " WHERE seq > ? ORDER BY seq LIMIT ?",
            (after, page),
        ).fetchall()
        for r in rows:
            yield StoredBatch(int(r[0]), bytes(r[1]), str(r[2]), int(r[3]), bool(r[4]), r[5], r[6])
        if len(rows) < page:
            return
        after = int(rows[-1][0])


def rewrite_rows(
    conn: sqlite3.Connection, where: str, head: Head, depth: int, rewrite: Rewrite
) -> tuple[Head, int, int, int]:
    """Inside an open write transaction: (new head, depth, readings, bytes) after the swap."""
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS rewrite AS SELECT * FROM batches WHERE 0")
    conn.execute("DELETE FROM temp.rewrite")
    new: Head | None = None
    for b in rewrite(head, depth, waiting(conn)):
        if new is not None and b.seq <= new.seq:
            raise OutboxError(f"{where}: rewrite seq {b.seq} after {new.seq}")
        conn.execute(INSERT.replace("batches", "temp.rewrite"), row(b))
        new = Head(b.seq, b.digest)
    if new is None or new.seq <= head.seq:
        raise OutboxError(f"{where}: rewrite must end above head {head.seq}")
    conn.execute("DELETE FROM batches")
    conn.execute("INSERT INTO batches SELECT * FROM temp.rewrite")
    conn.execute("DELETE FROM temp.rewrite")
    conn.execute("UPDATE head SET seq=?, prev=? WHERE id = 0", (new.seq, new.prev))
    n, readings, total = conn.execute(
        "SELECT count(*), coalesce(sum(CASE kind WHEN 'data' THEN n_readings ELSE 0 END), 0),"
        " coalesce(sum(bytes), 0) FROM batches"
    ).fetchone()
    return new, int(n), int(readings), int(total)
