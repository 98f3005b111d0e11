"""The outbox: signed batches in SQLite (WAL, synchronous=FULL) until the broker acknowledges them.

One table of batches keyed by ``seq`` (each row also keeps its digest) and a one-row ``head`` table
(chain head seq/prev and the persistent drop counters). The chain head is the newest batch row; the
head row holds it whenever the table is empty (an ack that deletes the newest batch rewrites the
head row in the same transaction). So a batch and the new head always commit in ONE transaction,
while an append writes no extra page for the head, and ``seq`` only ever grows over the gateway's
life, across restarts and power cuts. ``append`` returns only after that transaction
committed and the WAL was fsynced: that is the moment a batch counts as accepted.

Byte cap: when an append would go over ``cap_bytes`` the oldest non-alarm data batches are dropped
first, then alarm ones, then (last resort) old gap notices; for every run of consecutive dropped
seqs a signed gap notice (kind "gap") is appended in the same transaction and the persistent
counters grow. Acks run at synchronous=NORMAL: losing one in a power cut only means a resend
(at-least-once), and the next FULL commit syncs the WAL including them.

Disk-write accounting (``Stats.bytes_written``) is the kernel's per-thread ``write_bytes`` delta
around every transaction of this store (see ``iostat``). Two settings keep it low: 1 KiB pages
(a commit rewrites whole pages) and ``secure_delete=OFF`` (Debian's SQLite zeroes deleted pages,
writing every acked batch a second time).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from edge_agent.errors import OutboxError
from edge_agent.outbox.iostat import thread_write_bytes
from edge_agent.outbox.records import BatchLike, GapSigner, Head, Stats, StoredBatch
from edge_agent.outbox.runs import plan_drops

log = logging.getLogger(__name__)

GENESIS_PREV = bytes(32)
GAP_RESERVE_BYTES = 512  # room kept for one gap notice when planning a drop
DROP_CHUNK_MAX = 4 * 1024 * 1024
# a commit rewrites whole pages (leaf, interior, header, freelist): with 1 KiB pages a lone
# 200-reading batch costs ~3x its size on disk, with 4 KiB ~6x (benchmarks.pipeline bytes)
PAGE_SIZE = 1024
SCHEMA_VERSION = 1
_INSERT = "INSERT INTO batches VALUES (?,?,?,?,?,?,?,?,?,?)"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    n_readings INTEGER NOT NULL,
    alarm INTEGER NOT NULL,
    t_first INTEGER NOT NULL,
    t_last INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    created INTEGER NOT NULL,
    digest BLOB NOT NULL,
    cose BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS head (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    seq INTEGER NOT NULL,
    prev BLOB NOT NULL,
    batches_dropped INTEGER NOT NULL,
    readings_dropped INTEGER NOT NULL,
    bytes_dropped INTEGER NOT NULL,
    gaps INTEGER NOT NULL
);
"""


def drop_target(over: int, cap_bytes: int) -> int:
    """Bytes to free when ``over`` the cap: a chunk of the cap (1/16, at most 4 MiB) at a time, so
    a long outage produces one gap notice per chunk rather than one per new batch."""
    return max(over, min(cap_bytes // 16, DROP_CHUNK_MAX))


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Outbox:
    """Thread-safe: one writer connection (appends, acks) and one reader connection (pending)."""

    def __init__(self, path: Path, *, cap_bytes: int, gap_signer: GapSigner | None = None) -> None:
        if cap_bytes <= GAP_RESERVE_BYTES:
            raise OutboxError(f"{path}: outbox.cap_bytes {cap_bytes} is too small")
        self.path = path
        self.cap_bytes = cap_bytes
        self.gap_signer = gap_signer
        self._wlock = threading.Lock()
        self._rlock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fresh = not path.exists()
            self._w = self._connect()
            self._w.executescript(_SCHEMA)
            self._w.execute(
                "INSERT OR IGNORE INTO head VALUES (0, 0, ?, 0, 0, 0, 0)", (GENESIS_PREV,)
            )
            self._w.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self._w.commit()
            if fresh:
                _fsync_dir(path.parent)
            self._r = self._connect()
        except sqlite3.DatabaseError as exc:
            raise OutboxError(f"{path}: cannot open outbox: {exc}") from exc
        row = self._w.execute(
            "SELECT seq, prev, batches_dropped, readings_dropped, bytes_dropped, gaps"
            " FROM head WHERE id = 0"
        ).fetchone()
        self._head = Head(int(row[0]), bytes(row[1]))
        self._counters = [int(row[2]), int(row[3]), int(row[4]), int(row[5])]
        depth, readings, total = self._w.execute(
            "SELECT count(*), coalesce(sum(CASE kind WHEN 'data' THEN n_readings ELSE 0 END), 0),"
            " coalesce(sum(bytes), 0) FROM batches"
        ).fetchone()
        self._depth, self._readings, self._total_bytes = int(depth), int(readings), int(total)
        top = self._w.execute(
            "SELECT seq, digest FROM batches ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        if top is not None and int(top[0]) > self._head.seq:
            self._head = Head(int(top[0]), bytes(top[1]))
        self._written = 0 if thread_write_bytes() >= 0 else -1
        self._appended_readings = 0
        self._commits = [0, 0]  # appends, acks

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA page_size={PAGE_SIZE}")  # only takes effect on a new file
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise OutboxError(f"{self.path}: SQLite refused WAL mode (got {mode})")
        conn.execute("PRAGMA synchronous=FULL")
        # Debian builds SQLite with secure_delete on: every acked batch's pages would be zeroed,
        # i.e. written a second time. Signed readings are not secrets.
        conn.execute("PRAGMA secure_delete=OFF")
        conn.execute("PRAGMA journal_size_limit=8388608")
        conn.execute("PRAGMA busy_timeout=10000")
        return conn

    # -- observers -------------------------------------------------------------------------

    def add_listener(self, fn: Callable[[], None]) -> None:
        """``fn()`` runs (in the appending thread) after every committed append."""
        self._listeners.append(fn)

    def remove_listener(self, fn: Callable[[], None]) -> None:
        with self._wlock:
            if fn in self._listeners:
                self._listeners.remove(fn)

    @property
    def head(self) -> Head:
        return self._head

    # -- writing ---------------------------------------------------------------------------

    def append(self, batches: Sequence[BatchLike]) -> list[BatchLike]:
        """Commit ``batches`` (consecutive seqs after the head) durably in one transaction.

        Returns the gap notices appended because the byte cap forced drops. Raises OutboxError
        (and commits nothing) on a seq that does not follow the head or a batch over the cap.
        """
        if not batches:
            return []
        with self._wlock:
            expect = self._head.seq + 1
            for b in batches:
                if b.seq != expect:
                    raise OutboxError(
                        f"{self.path}: append seq {b.seq} does not follow head seq {expect - 1}"
                    )
                expect += 1
            incoming = sum(len(b.cose) for b in batches)
            if incoming + GAP_RESERVE_BYTES > self.cap_bytes:
                raise OutboxError(
                    f"{self.path}: {incoming} bytes of batches exceed outbox.cap_bytes"
                    f" {self.cap_bytes}"
                )
            w0 = thread_write_bytes()
            gaps: list[BatchLike] = []
            try:
                self._w.execute("BEGIN IMMEDIATE")
                rows = [self._row(b) for b in batches]
                self._w.executemany(_INSERT, rows)
                head = Head(batches[-1].seq, batches[-1].digest)
                total = self._total_bytes + incoming
                counters = list(self._counters)
                depth = self._depth + len(batches)
                readings = self._readings + sum(b.n_readings for b in batches if b.kind == "data")
                over = total + GAP_RESERVE_BYTES - self.cap_bytes
                if over > 0:
                    head, total, counters, depth, readings, gaps = self._drop(
                        drop_target(over, self.cap_bytes),
                        head,
                        total,
                        counters,
                        depth,
                        readings,
                        batches[0].seq,
                    )
                    self._w.execute(
                        "UPDATE head SET batches_dropped=?, readings_dropped=?, bytes_dropped=?,"
                        " gaps=? WHERE id = 0",
                        counters,
                    )
                self._w.execute("COMMIT")
            except BaseException as exc:
                if self._w.in_transaction:
                    self._w.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise OutboxError(f"{self.path}: append failed: {exc}") from exc
                raise
            self._head, self._total_bytes, self._counters = head, total, counters
            self._depth, self._readings = depth, readings
            self._appended_readings += sum(b.n_readings for b in batches if b.kind == "data")
            self._commits[0] += 1
            self._charge(w0)
        for fn in list(self._listeners):
            fn()
        return gaps

    @staticmethod
    def _row(b: BatchLike) -> tuple[int, str, int, int, int, int, int, int, bytes, bytes]:
        return (
            b.seq, b.kind, b.n_readings, int(b.alarm), b.t_first_ns, b.t_last_ns, len(b.cose),
            time.time_ns(), b.digest, b.cose,
        )  # fmt: skip

    def _drop(
        self,
        over: int,
        head: Head,
        total: int,
        counters: list[int],
        depth: int,
        readings: int,
        protect_from: int,
    ) -> tuple[Head, int, list[int], int, int, list[BatchLike]]:
        """Inside the append transaction: drop old batches, append signed gap notices."""
        if self.gap_signer is None:
            raise OutboxError(f"{self.path}: outbox full ({total} bytes) and no gap signer")
        candidates = self._w.execute(
            "SELECT seq, kind, alarm, n_readings, bytes, t_first, t_last FROM batches"
            " WHERE seq < ? ORDER BY seq",
            (protect_from,),
        ).fetchall()
        runs = plan_drops(candidates, over, GAP_RESERVE_BYTES)
        if not runs:
            raise OutboxError(f"{self.path}: outbox full and nothing left to drop")
        if any(r.notices for r in runs):
            log.error("outbox_gap_notices_dropped cap_bytes=%d (cap too small)", self.cap_bytes)
        gaps: list[BatchLike] = []
        for run in runs:
            self._w.executemany("DELETE FROM batches WHERE seq = ?", [(s,) for s in run.seqs])
            total -= run.bytes
            depth -= len(run.seqs)
            readings -= run.readings
            counters[0] += len(run.seqs)
            counters[1] += run.readings
            counters[2] += run.bytes
            gap = self.gap_signer(head.seq, head.prev, run)
            if gap.seq != head.seq + 1 or gap.kind != "gap":
                raise OutboxError(f"{self.path}: gap signer returned seq {gap.seq}/{gap.kind}")
            self._w.execute(_INSERT, self._row(gap))
            head = Head(gap.seq, gap.digest)
            total += len(gap.cose)
            depth += 1
            counters[3] += 1
            gaps.append(gap)
            log.warning(
                "outbox_drop first_seq=%d last_seq=%d batches=%d readings=%d bytes=%d gap_seq=%d",
                run.first_seq, run.last_seq, len(run.seqs), run.readings, run.bytes, gap.seq,
            )  # fmt: skip
        return head, total, counters, depth, readings, gaps

    def ack(self, seqs: Iterable[int]) -> int:
        """Delete acknowledged batches; returns how many were still present."""
        keys = [(s,) for s in seqs]
        if not keys:
            return 0
        with self._wlock:
            w0 = thread_write_bytes()
            try:
                self._w.execute("PRAGMA synchronous=NORMAL")
                self._w.execute("BEGIN IMMEDIATE")
                placeholders = ",".join("?" * len(keys))
                found = self._w.execute(
                    "SELECT count(*), coalesce(sum(bytes), 0),"
                    " coalesce(sum(CASE kind WHEN 'data' THEN n_readings ELSE 0 END), 0)"
                    f" FROM batches WHERE seq IN ({placeholders})",
                    [k[0] for k in keys],
                ).fetchone()
                n, nbytes, nread = int(found[0]), int(found[1]), int(found[2])
                self._w.execute(
                    f"DELETE FROM batches WHERE seq IN ({placeholders})", [k[0] for k in keys]
                )
                if (
                    n
                    and self._w.execute(
                        "SELECT 1 FROM batches WHERE seq >= ?", (self._head.seq,)
                    ).fetchone()
                    is None
                ):  # the newest batch went: the head row keeps the head
                    self._w.execute(
                        "UPDATE head SET seq=?, prev=? WHERE id = 0",
                        (self._head.seq, self._head.prev),
                    )
                total = self._total_bytes - nbytes
                self._w.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._w.in_transaction:
                    self._w.execute("ROLLBACK")
                raise OutboxError(f"{self.path}: ack failed: {exc}") from exc
            finally:
                self._w.execute("PRAGMA synchronous=FULL")
            self._total_bytes = total
            self._depth -= n
            self._readings -= nread
            self._commits[1] += 1
            self._charge(w0)
            return n

    def _charge(self, w0: int) -> None:
        if self._written >= 0 and w0 >= 0:
            self._written += thread_write_bytes() - w0

    # -- reading ---------------------------------------------------------------------------

    def pending(self, after_seq: int = 0, limit: int = 100) -> list[StoredBatch]:
        """Waiting batches with seq > after_seq, in seq order."""
        with self._rlock:
            try:
                rows = self._r.execute(
                    "SELECT seq, cose, kind, n_readings, alarm, t_first, t_last FROM batches"
                    " WHERE seq > ? ORDER BY seq LIMIT ?",
                    (after_seq, limit),
                ).fetchall()
            except sqlite3.Error as exc:
                raise OutboxError(f"{self.path}: read failed: {exc}") from exc
        return [
            StoredBatch(int(r[0]), bytes(r[1]), str(r[2]), int(r[3]), bool(r[4]), r[5], r[6])
            for r in rows
        ]

    def stats(self) -> Stats:
        with self._rlock:
            try:
                row = self._r.execute("SELECT min(created) FROM batches").fetchone()
            except sqlite3.Error as exc:
                raise OutboxError(f"{self.path}: read failed: {exc}") from exc
        oldest = 0.0 if row[0] is None else max(0.0, (time.time_ns() - int(row[0])) / 1e9)
        file_bytes = 0
        for suffix in ("", "-wal"):
            try:
                file_bytes += os.stat(f"{self.path}{suffix}").st_size
            except FileNotFoundError:
                pass
        c = self._counters
        return Stats(
            depth=self._depth,
            readings=self._readings,
            bytes=self._total_bytes,
            oldest_age_s=oldest,
            head_seq=self._head.seq,
            batches_dropped=c[0],
            readings_dropped=c[1],
            bytes_dropped=c[2],
            gaps=c[3],
            file_bytes=file_bytes,
            bytes_written=self._written,
            readings_appended=self._appended_readings,
            append_commits=self._commits[0],
            ack_commits=self._commits[1],
        )

    def close(self) -> None:
        with self._wlock, self._rlock:
            self._r.close()
            self._w.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
