"""Making room inside an append transaction: how far over the budget it is, which batches go,
the one signed gap notice of the drop (``runs``), and the drops in the journal (``DropLog``).
Functions over the store's writer connection; the store decides when.

What counts against the cap (see ``space``): pages in use (page count minus freelist, as SQLite
sees them inside the open transaction, so exactly what this append adds), the WAL allowance, the
WAL index, a leftover journal and the reserve. What the disk allows: the outbox's files now plus
the filesystem's free space.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Sequence

from edge_agent.errors import OutboxError, VerifyError
from edge_agent.outbox.records import BatchLike, GapSigner, Head
from edge_agent.outbox.runs import NOTICE_BYTES, Candidate, Carried, DropPlan, plan_drops
from edge_agent.outbox.schema import INSERT, PAGE_SIZE, row
from edge_agent.outbox.space import Footprint
from edge_agent.trust.batch import decode_payload
from edge_agent.trust.cose import parse1

log = logging.getLogger(__name__)

GAP_RESERVE_BYTES = NOTICE_BYTES  # room kept for the gap notice of a drop
SUMMARY_S = 60.0  # one journal line per this many seconds of drops
DROP_CHUNK_MIN, DROP_CHUNK_MAX = 64 * 1024, 4 * 1024 * 1024


def drop_target(over: int, stored: int) -> int:
    """Bytes to free when ``over`` the budget: a chunk of what is stored (1/16, within 64 KiB ..
    4 MiB) at a time, so a long outage re-signs its gap notice once per chunk, not per batch."""
    return max(over, min(max(stored // 16, DROP_CHUNK_MIN), DROP_CHUNK_MAX))


def pragma(conn: sqlite3.Connection, name: str) -> int:
    return int(conn.execute(f"PRAGMA {name}").fetchone()[0])


def over_budget(
    conn: sqlite3.Connection, fp: Footprint, pages0: int, *, cap: int, wal_limit: int, reserve: int
) -> tuple[int, int, int]:
    """Inside the append transaction: bytes over the cap, bytes over what the disk can hold that
    dropping first would avoid (<= 0: it fits), and the pages in use. ``pages0``: page count at
    BEGIN."""
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
    return cap_over, min(disk_over, grown), pages - free


def _carried(cose: bytes) -> Carried | None:
    """What a stored gap or loss notice announced (None: unreadable, so it is never dropped)."""
    try:
        p = decode_payload(parse1(cose)[2])
    except VerifyError as exc:
        log.error("outbox_notice_unreadable err=%s", exc)
        return None
    if p.gap is not None:
        return Carried(p.gap.ranges, p.gap.readings, p.gap.unsigned)
    if p.loss is not None:
        return Carried(unsigned=p.loss.readings)
    return None


def choose_victims(
    conn: sqlite3.Connection, want: int, must: int, *, held_through: int, before: int
) -> tuple[DropPlan | None, int]:
    """The drop worth ``want`` bytes (alarms and loss notices only to reach ``must``) among seqs
    after ``held_through`` and before ``before`` (the batches being appended); see
    ``plan_drops``. Notices among them are read to carry what they announced."""
    rows = conn.execute(
        "SELECT seq, kind, alarm, n_readings, bytes, t_first, t_last,"
        " CASE WHEN kind IN ('gap', 'loss') THEN cose END FROM batches"
        " WHERE seq > ? AND seq < ? ORDER BY seq",
        (held_through, before),
    ).fetchall()
    candidates: list[Candidate] = []
    carried: dict[int, Carried] = {}
    for r in rows:
        candidates.append((int(r[0]), str(r[1]), int(r[2]), int(r[3]), int(r[4]), int(r[5]),
                           int(r[6])))  # fmt: skip
        if r[7] is not None:
            what = _carried(bytes(r[7]))
            if what is not None:
                carried[int(r[0])] = what
    return plan_drops(candidates, carried, want, must)


def delete(conn: sqlite3.Connection, plan: DropPlan | None) -> None:
    if plan is not None:
        conn.executemany("DELETE FROM batches WHERE seq = ?", [(s,) for s in plan.seqs])


def sign_gap(
    conn: sqlite3.Connection, signer: GapSigner, plan: DropPlan, head: Head, where: str
) -> BatchLike:
    """The signed gap notice of ``plan``, chained after ``head``, inserted."""
    gap = signer(head.seq, head.prev, plan)
    if gap.seq != head.seq + 1 or gap.kind != "gap":
        raise OutboxError(f"{where}: gap signer returned seq {gap.seq}/{gap.kind}")
    conn.execute(INSERT, row(gap))
    return gap


def counted(counters: Sequence[int], plan: DropPlan | None) -> list[int]:
    """The persistent counters (data batches, readings, bytes dropped; gap notices) after a drop."""
    c = list(counters)
    if plan is not None:
        c[0] += plan.data
        c[1] += plan.dropped_readings
        c[2] += plan.bytes
        c[3] += 1
    return c


class DropLog:
    """Drops in the journal without flooding it: the first drop of a spell at warning, then one
    summary line per ``every_s`` seconds while drops go on (and one when they stop)."""

    def __init__(self, cap: int, every_s: float = SUMMARY_S) -> None:
        self.cap = cap
        self.every_s = every_s
        self._since = 0.0  # start of the current summary period (0: no drops pending a summary)
        self._last = 0.0
        self._n = [0, 0, 0, 0, 0]  # drops, data batches, readings, alarm batches, notices merged
        self._notice = (0, 0)  # seq and ranges of the latest notice

    def dropped(self, plan: DropPlan, gap: BatchLike, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if not self._since:
            self._since = now
            log.warning("outbox_dropping cap_bytes=%d first_seq=%d last_seq=%d readings=%d "
                        "gap_seq=%d (oldest batches dropped, named in a signed gap notice; a "
                        "summary follows every %.0f s)", self.cap, plan.first_seq, plan.last_seq,
                        plan.dropped_readings, gap.seq, self.every_s)  # fmt: skip
        for i, v in enumerate((1, plan.data, plan.dropped_readings, plan.alarms, plan.notices)):
            self._n[i] += v
        self._notice = (gap.seq, len(plan.ranges))
        self._last = now
        if now - self._since >= self.every_s:
            self.summary(now)

    def tick(self, now: float | None = None) -> None:
        """Close a spell that ended: the last summary."""
        now = time.monotonic() if now is None else now
        if self._since and now - self._last >= self.every_s:
            self.summary(now)
            self._since = 0.0

    def summary(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if not self._n[0]:
            return
        drops_, data, readings, alarms, merged = self._n
        log.warning("outbox_drops period_s=%.0f drops=%d batches=%d readings=%d alarm_batches=%d "
                    "notices_merged=%d gap_seq=%d ranges=%d", now - self._since, drops_, data,
                    readings, alarms, merged, *self._notice)  # fmt: skip
        self._n = [0, 0, 0, 0, 0]
        self._since = now
