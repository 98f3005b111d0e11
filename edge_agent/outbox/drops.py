"""Making room inside an append transaction: how far over the budget it is, which batches go,
their signed gap notices. Functions over the store's writer connection; the store decides when.

What counts against the cap (see ``space``): pages in use (page count minus freelist, as SQLite
sees them inside the open transaction, so exactly what this append adds), the WAL allowance, the
WAL index, a leftover journal and the reserve. What the disk allows: the outbox's files now plus
the filesystem's free space.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence

from edge_agent.errors import OutboxError
from edge_agent.outbox.records import BatchLike, GapSigner, Head
from edge_agent.outbox.runs import DropRun, plan_drops
from edge_agent.outbox.schema import INSERT, PAGE_SIZE, row
from edge_agent.outbox.space import Footprint

log = logging.getLogger(__name__)

GAP_RESERVE_BYTES = 512  # room kept for one gap notice when planning a drop
DROP_CHUNK_MIN, DROP_CHUNK_MAX = 64 * 1024, 4 * 1024 * 1024


def drop_target(over: int, stored: int) -> int:
    """Bytes to free when ``over`` the budget: a chunk of what is stored (1/16, within 64 KiB ..
    4 MiB) at a time, so a long outage makes one gap notice per chunk rather than one per batch."""
    return max(over, min(max(stored // 16, DROP_CHUNK_MIN), DROP_CHUNK_MAX))


def pragma(conn: sqlite3.Connection, name: str) -> int:
    return int(conn.execute(f"PRAGMA {name}").fetchone()[0])


def over_budget(
    conn: sqlite3.Connection, fp: Footprint, pages0: int, *, cap: int, wal_limit: int, reserve: int
) -> tuple[int, int]:
    """Inside the append transaction: bytes over the cap, and bytes over what the disk can hold
    that dropping first would avoid (<= 0: it fits). ``pages0``: page count at BEGIN."""
    pages, free = pragma(conn, "page_count"), pragma(conn, "freelist_count")
    fixed = max(fp.wal, wal_limit) + fp.shm + fp.journal + reserve
    cap_over = (pages - free) * PAGE_SIZE + fixed - cap
    # the disk must hold the database as it will be, the WAL up to its allowance and the reserve;
    # when it cannot even hold that (others filled it) the store commits anyway and answers a
    # failing commit (SQLITE_FULL) with the reserve
    disk_over = max(fp.db, pages * PAGE_SIZE) + fixed - fp.disk_budget
    # only growth this transaction caused can be avoided by dropping first (the inserts then
    # reuse the freed pages)
    grown = max(0, pages - pages0) * PAGE_SIZE
    return cap_over, min(disk_over, grown)


def choose_victims(
    conn: sqlite3.Connection, want: int, must: int, *, held_through: int, before: int
) -> tuple[list[DropRun], int]:
    """Runs worth ``want`` bytes (alarms and notices only to reach ``must``) among seqs after
    ``held_through`` and before ``before`` (the batches being appended); see ``plan_drops``."""
    candidates = conn.execute(
        "SELECT seq, kind, alarm, n_readings, bytes, t_first, t_last FROM batches"
        " WHERE seq > ? AND seq < ? ORDER BY seq",
        (held_through, before),
    ).fetchall()
    return plan_drops(candidates, want, must, GAP_RESERVE_BYTES)


def delete_runs(conn: sqlite3.Connection, runs: Sequence[DropRun]) -> None:
    for run in runs:
        conn.executemany("DELETE FROM batches WHERE seq = ?", [(s,) for s in run.seqs])


def sign_gaps(
    conn: sqlite3.Connection, signer: GapSigner, runs: Sequence[DropRun], head: Head, where: str
) -> list[BatchLike]:
    """One signed gap notice per run, chained after ``head``, inserted."""
    gaps: list[BatchLike] = []
    for run in runs:
        gap = signer(head.seq, head.prev, run)
        if gap.seq != head.seq + 1 or gap.kind != "gap":
            raise OutboxError(f"{where}: gap signer returned seq {gap.seq}/{gap.kind}")
        conn.execute(INSERT, row(gap))
        head = Head(gap.seq, gap.digest)
        gaps.append(gap)
    return gaps


def counted(counters: Sequence[int], runs: Sequence[DropRun], gaps: Sequence[object]) -> list[int]:
    """The persistent counters (batches, readings, bytes dropped; gap notices) after a drop."""
    c = list(counters)
    for run in runs:
        c[0] += len(run.seqs)
        c[1] += run.readings
        c[2] += run.bytes
    c[3] += len(gaps)
    return c


def log_drops(runs: Sequence[DropRun], gaps: Sequence[BatchLike], cap: int) -> None:
    if any(r.notices for r in runs):
        log.error("outbox_gap_notices_dropped cap_bytes=%d (cap too small)", cap)
    for run, gap in zip(runs, gaps, strict=True):
        log.warning(
            "outbox_drop first_seq=%d last_seq=%d batches=%d readings=%d bytes=%d gap_seq=%d",
            run.first_seq, run.last_seq, len(run.seqs), run.readings, run.bytes, gap.seq,
        )  # fmt: skip
