"""One append transaction of the outbox, with the drops that make room for it.

The append is measured inside its own transaction (SQLite's page and freelist counts, see
``drops.over_budget``) and, when over the budget, rolled back and redone with the oldest batches
dropped first and ONE signed gap notice naming them — and everything the unpublished notices it
replaces had named (``runs``) — in the same transaction. A commit failing for want of space
(SQLITE_FULL / ENOSPC) releases the reserve file, then restarts the WAL, and is redone likewise.
``Mirror`` is the store's in-memory copy of what the file holds, updated only after a commit.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from edge_agent.errors import OutboxError
from edge_agent.outbox import drops
from edge_agent.outbox.drops import DropLog, drop_target, pragma
from edge_agent.outbox.health import CommitHealth
from edge_agent.outbox.records import BatchLike, GapSigner, Head, Stats
from edge_agent.outbox.runs import DropPlan
from edge_agent.outbox.schema import INSERT, PAGE_SIZE, is_full, oldest_created, restart_wal, row
from edge_agent.outbox.space import Footprint, Reserve

log = logging.getLogger(__name__)

MAX_ROUNDS = 8  # tries of one append (over budget or disk full -> drop more, try again)


@dataclass(slots=True)
class Mirror:
    """What the store keeps in memory of its file (status is answered from it, never the disk)."""

    head: Head
    counters: list[int]  # data batches, readings, bytes dropped; gap notices
    held: int
    depth: int
    readings: int
    total_bytes: int
    oldest_ns: int | None  # wall time the oldest waiting batch was stored (None: empty)
    live_pages: int  # pages in use at the last commit (page count minus freelist)
    fp: Footprint | None = None  # the files and the filesystem as last measured
    written: int = 0  # bytes the kernel wrote for the store's transactions (-1: not known)
    appended_readings: int = 0  # data readings appended by this process
    commits: list[int] = field(default_factory=lambda: [0, 0])  # appends, acks

    def stats(self, *, cap: int, wal_limit: int, reserve: Reserve, health: CommitHealth) -> Stats:
        """What ``Outbox.stats`` reports: the counts as of the last commit, the files as last
        measured. Never reads the database, so it answers while the disk hangs or fails."""
        fp = self.fp or Footprint(0, 0, 0, 0, 0, -1)
        ns = self.oldest_ns
        oldest = 0.0 if ns is None else max(0.0, (time.time_ns() - ns) / 1e9)
        used = self.live_pages * PAGE_SIZE + max(fp.wal, wal_limit) + fp.shm + fp.journal
        err, failing = health.state()
        c = self.counters
        return Stats(
            depth=self.depth, readings=self.readings, bytes=self.total_bytes, oldest_age_s=oldest,
            head_seq=self.head.seq, batches_dropped=c[0], readings_dropped=c[1],
            bytes_dropped=c[2], gaps=c[3], file_bytes=fp.db + fp.wal, bytes_written=self.written,
            readings_appended=self.appended_readings, append_commits=self.commits[0],
            ack_commits=self.commits[1], footprint_bytes=fp.files,
            used_bytes=used + reserve.size, cap_bytes=cap,
            budget_bytes=min(cap, fp.disk_budget), disk_free_bytes=fp.fs_free,
            reserve_bytes=reserve.size, reserve_held=reserve.held,
            held_through=self.held, commit_error=err, commit_failing_s=failing,
        )  # fmt: skip


class Appender:
    """The append rounds over the store's writer connection (called under its write lock)."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        where: str,
        *,
        cap: int,
        wal_limit: int,
        reserve: Reserve,
        signer: GapSigner | None,
        mirror: Mirror,
        measure: Callable[[], Footprint],
    ) -> None:
        self.conn, self.where = conn, where
        self.cap, self.wal_limit, self.reserve = cap, wal_limit, reserve
        self.signer = signer
        self.m = mirror
        self.measure = measure
        self.droplog = DropLog(cap)

    def run(self, batches: Sequence[BatchLike], incoming: int) -> list[BatchLike]:
        w = self.conn
        rows = [row(b) for b in batches]
        first, last = batches[0], batches[-1]
        want = must = 0  # bytes to drop / to drop even if it takes alarms and loss notices
        why = ""
        for _ in range(MAX_ROUNDS):
            fp = self.measure()
            try:
                w.execute("BEGIN IMMEDIATE")
                pages0 = pragma(w, "page_count")
                plan, reach = self._victims(want, must, first.seq)
                drops.delete(w, plan)
                w.executemany(INSERT, rows)
                gap = (drops.sign_gap(w, self.signer, plan, Head(last.seq, last.digest),
                                      self.where) if plan and self.signer else None)  # fmt: skip
                cap_over, disk_over, live = drops.over_budget(
                    w, fp, pages0, cap=self.cap, wal_limit=self.wal_limit,
                    reserve=self.reserve.size)  # fmt: skip
                over = max(cap_over, disk_over)
                if over > 0 and not (reach == 2 and cap_over <= 0):
                    self.rollback()
                    if reach == 2:
                        raise OutboxError(
                            f"{self.where}: outbox full: {cap_over} bytes over the cap of"
                            f" {self.cap} and only batches held for the broker"
                            f" (seq <= {self.m.held}), resume notices or batches being appended"
                            " are left"
                        )
                    # the budget is the cap or the disk, whichever is smaller: over either,
                    # alarm batches go too once the plain ones are gone. Space comes back in
                    # whole pages: a drop can free no page at all (kept rows, e.g. alarms, left
                    # in every leaf), so ``must`` passes what this round dropped, or ``reach``
                    # would never get to the alarms and each round would be the same
                    must = max(must, plan.bytes if plan is not None else 0) + over
                    want = max(want + over, drop_target(over, self.m.total_bytes))
                    why = f"{over} bytes over budget"
                    continue
                # over the disk with nothing left to drop: try; the disk decides (SQLITE_FULL)
                counters = drops.counted(self.m.counters, plan)
                if plan is not None:
                    w.execute(
                        "UPDATE head SET batches_dropped=?, readings_dropped=?, bytes_dropped=?,"
                        " gaps=? WHERE id = 0",
                        counters,
                    )
                oldest = oldest_created(w) if plan is not None or not self.m.depth else None
                w.execute("COMMIT")
            except sqlite3.Error as exc:
                self.rollback()
                if not is_full(exc):
                    raise OutboxError(f"{self.where}: append failed: {exc}") from exc
                if not why.startswith("disk full"):  # one line per append, not per try
                    log.warning("outbox_disk_full path=%s free=%d files=%d", self.where,
                                fp.fs_free, fp.files)  # fmt: skip
                why = f"disk full: {exc}"
                if not self.reserve.release():  # no new room: make room inside the files
                    restart_wal(w, self.where)
                    more = drop_target(0, self.m.total_bytes)
                    want, must = want + more, must + more
                continue
            gaps = [] if gap is None else [gap]
            self._applied(batches, incoming, plan, gaps, counters, live, oldest)
            self.reserve.ensure(free=fp.fs_free)
            return gaps
        raise OutboxError(f"{self.where}: append failed after {MAX_ROUNDS} tries: {why}")

    def drop(self, nbytes: int) -> list[BatchLike]:
        """One transaction: the oldest waiting batches worth ``nbytes`` — held ones too — dropped,
        with their signed gap notice. Only for a state about to re-sign all it holds (rechain)."""
        if self.signer is None:
            raise OutboxError(f"{self.where}: no gap signer")
        w = self.conn
        for attempt in (0, 1):
            try:
                w.execute("BEGIN IMMEDIATE")
                plan, _ = drops.choose_victims(w, nbytes, nbytes, held_through=0,
                                               before=self.m.head.seq + 1)  # fmt: skip
                if plan is None:
                    self.rollback()
                    return []
                drops.delete(w, plan)
                gap = drops.sign_gap(w, self.signer, plan, self.m.head, self.where)
                counters = drops.counted(self.m.counters, plan)
                w.execute("UPDATE head SET batches_dropped=?, readings_dropped=?, bytes_dropped=?,"
                          " gaps=? WHERE id = 0", counters)  # fmt: skip
                live = pragma(w, "page_count") - pragma(w, "freelist_count")
                oldest = oldest_created(w)
                w.execute("COMMIT")
            except sqlite3.Error as exc:
                self.rollback()
                if attempt == 0 and is_full(exc) and self.reserve.release():
                    continue
                raise OutboxError(f"{self.where}: drop failed: {exc}") from exc
            self._applied([], 0, plan, [gap], counters, live, oldest)
            restart_wal(w, self.where)  # the rewrite that follows starts the WAL afresh
            return [gap]
        raise OutboxError(f"{self.where}: drop failed")  # not reached

    def _victims(self, want: int, must: int, before: int) -> tuple[DropPlan | None, int]:
        if not want:
            return None, 0
        if self.signer is None:
            raise OutboxError(f"{self.where}: outbox full and no gap signer")
        return drops.choose_victims(self.conn, want, must, held_through=self.m.held,
                                    before=before)  # fmt: skip

    def _applied(
        self,
        batches: Sequence[BatchLike],
        incoming: int,
        plan: DropPlan | None,
        gaps: list[BatchLike],
        counters: list[int],
        live: int,
        oldest: int | None,
    ) -> None:
        """The in-memory mirror of a committed append."""
        m = self.m
        last = gaps[-1] if gaps else batches[-1]  # (a drop alone always makes a notice)
        m.head = Head(last.seq, last.digest)
        m.counters = counters
        m.live_pages = live
        if oldest is not None:
            m.oldest_ns = oldest
        freed = plan.bytes if plan is not None else 0
        m.total_bytes += incoming + sum(len(g.cose) for g in gaps) - freed
        m.depth += len(batches) + len(gaps) - (len(plan.seqs) if plan is not None else 0)
        m.readings += sum(b.n_readings for b in batches if b.kind == "data")
        if plan is not None:
            m.readings -= plan.dropped_readings
            self.droplog.dropped(plan, gaps[0])
        else:
            self.droplog.tick()

    def rollback(self) -> None:
        try:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
        except sqlite3.Error as exc:  # SQLite may have rolled back already
            log.debug("outbox_rollback path=%s err=%s", self.where, exc)
