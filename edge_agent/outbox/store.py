"""The outbox: signed batches in SQLite (WAL, synchronous=FULL) until the broker acknowledges them.

One table of batches keyed by ``seq`` (each row also keeps its digest) and a one-row ``head`` table
(chain head seq/prev and the persistent drop counters); see ``schema``. The chain head is the
newest batch row; the head row holds it whenever the table is empty (an ack that deletes the
newest batch rewrites the head row in the same transaction). So a batch and the new head always
commit in ONE transaction, while an append writes no extra page for the head, and ``seq`` only
ever grows over the gateway's life, across restarts and power cuts. ``append`` returns only after
that transaction committed and the WAL was fsynced: that is the moment a batch counts as accepted.

The cap is the real footprint on disk (``space``), never more than the filesystem can hold. An
append is measured inside its own transaction and, when over, redone with the oldest batches
dropped first and one signed gap notice that names them and carries what the unpublished notices
it replaces had named (``append``, ``drops``, ``runs``). A commit failing for want of space
(SQLITE_FULL / ENOSPC) releases the reserve file, then restarts the WAL, and is redone likewise.
What ``stats`` reports comes from memory (``append.Mirror``): `status` never waits for the disk.

Exact gap notices: batches up to ``held_through`` (recorded durably by ``hold_through`` before
the uplink publishes them) may have reached the broker, so they are never dropped: a notice names
only batches the broker never saw. Acks run at synchronous=NORMAL: losing one in a power cut only
means a resend (at-least-once), and the next FULL commit syncs the WAL including them.

Disk-write accounting (``Stats.bytes_written``) is the kernel's per-thread ``write_bytes`` delta
around every transaction of this store (see ``iostat``). Every error leaves as ``OutboxError``.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from edge_agent.errors import HeadMoved, OutboxError
from edge_agent.outbox.append import Appender, Mirror
from edge_agent.outbox.drops import GAP_RESERVE_BYTES
from edge_agent.outbox.epochs import Epoch
from edge_agent.outbox.health import CommitHealth
from edge_agent.outbox.iostat import thread_write_bytes
from edge_agent.outbox.records import BatchLike, GapSigner, Head, Stats, StoredBatch
from edge_agent.outbox.rewrite import Rewrite, may_grow, rewrite_rows
from edge_agent.outbox.schema import (
    PAGE_SIZE,
    connect,
    create,
    delete_acked,
    is_full,
    live_pages,
    load_state,
    oldest_created,
)  # fmt: skip
from edge_agent.outbox.space import (
    Footprint,
    Reserve,
    default_reserve,
    disk_size,
    fsync_dir,
    measure,
    wal_limit,
)

log = logging.getLogger(__name__)

SHM_BYTES = 32 * 1024  # the WAL index of a small database
_T = TypeVar("_T")


class Outbox:
    """Thread-safe: one writer connection (appends, acks) and one reader connection (pending)."""

    def __init__(
        self,
        path: Path,
        *,
        cap_bytes: int,
        gap_signer: GapSigner | None = None,
        reserve_bytes: int | None = None,
    ) -> None:
        self.path = path
        self.cap_bytes = cap_bytes
        self.gap_signer = gap_signer
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutboxError(f"{path}: cannot open outbox: {exc}") from exc
        base = min(cap_bytes, disk_size(path.parent))  # a disk smaller than the cap sizes them
        self.wal_limit = wal_limit(base)
        size = default_reserve(base) if reserve_bytes is None else reserve_bytes
        self.reserve = Reserve(Path(f"{path}.reserve"), size)
        floor = self._fixed_overhead() + 16 * PAGE_SIZE + GAP_RESERVE_BYTES
        if cap_bytes < floor:
            raise OutboxError(
                f"{path}: outbox cap {cap_bytes} is too small: the WAL allowance ({self.wal_limit})"
                f" and the reserve ({size}) need at least {floor}"
            )
        self.health = CommitHealth(str(path))
        self.epoch: Epoch | None = None  # this daemon's run, once ``epochs.start`` ran
        self._wlock = threading.Lock()
        self._rlock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []
        try:
            self._open()
        except OSError as exc:
            raise OutboxError(f"{path}: cannot open outbox: {exc}") from exc
        except sqlite3.Error as exc:
            raise OutboxError(f"{path}: cannot open outbox: {exc}") from exc
        self.reserve.ensure(force=True)
        self._m.written = 0 if thread_write_bytes() >= 0 else -1

    def _open(self) -> None:
        fresh = not self.path.exists()
        for attempt in (0, 1):
            try:
                self._w = connect(self.path, self.wal_limit)
                create(self._w)
                break
            except sqlite3.Error as exc:
                if hasattr(self, "_w"):
                    self._w.close()
                if attempt == 0 and is_full(exc) and self.reserve.release():
                    continue
                raise
        if fresh:
            fsync_dir(self.path.parent)
        self._r = connect(self.path, self.wal_limit)
        st = load_state(self._w)
        # a mark past the head (the uplink moves it ahead of what it publishes) covers no batch
        # of an earlier process: none above the head exists. Left there, it would keep batches
        # this process signs offline from ever being dropped; the uplink moves it again before
        # it publishes past the head.
        held = min(st.held, st.head.seq)
        self._m = Mirror(st.head, st.counters, held, st.depth, st.readings, st.total_bytes,
                         st.oldest_ns, st.live_pages)  # fmt: skip
        self._appender = Appender(
            self._w, str(self.path), cap=self.cap_bytes, wal_limit=self.wal_limit,
            reserve=self.reserve, signer=self.gap_signer, mirror=self._m, measure=self._measure,
        )  # fmt: skip

    @contextmanager
    def _writing(self, kind: str) -> Iterator[None]:
        """The write lock, with the transaction marked in flight (``health``: a commit that
        never returns — a frozen or failing disk — shows as failing)."""
        with self._wlock:
            self.health.begin(kind)
            try:
                yield
            finally:
                self.health.end()

    def _fixed_overhead(self) -> int:
        return self.wal_limit + self.reserve.size + SHM_BYTES

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
        return self._m.head

    @property
    def held_through(self) -> int:
        return self._m.held

    # -- writing ---------------------------------------------------------------------------

    def append(self, batches: Sequence[BatchLike]) -> list[BatchLike]:
        """Commit ``batches`` (consecutive seqs after the head) durably in one transaction.

        Returns the gap notices appended because the cap forced drops. Raises OutboxError (and
        commits nothing) on a seq that does not follow the head, a group over the cap, or when no
        room can be made (everything left is held for the broker, or the disk fails)."""
        if not batches:
            return []
        with self._writing("append"):
            expect = self._m.head.seq + 1
            for b in batches:
                if b.seq != expect:
                    msg = f"{self.path}: append seq {b.seq} does not follow head seq {expect - 1}"
                    if expect == self._m.head.seq + 1:
                        raise HeadMoved(msg)
                    raise OutboxError(msg)  # a group with a hole in it
                expect += 1
            incoming = sum(len(b.cose) for b in batches)
            room = self.cap_bytes - self._fixed_overhead() - GAP_RESERVE_BYTES
            if incoming > room:
                raise OutboxError(
                    f"{self.path}: {incoming} bytes of batches exceed outbox.cap_bytes"
                    f" {self.cap_bytes} (room for batches: {room})"
                )
            w0 = thread_write_bytes()
            try:
                gaps = self._appender.run(batches, incoming)
            except OutboxError as exc:
                self.health.failed("append", str(exc))
                raise
            self.health.ok("append")
            self._m.appended_readings += sum(b.n_readings for b in batches if b.kind == "data")
            self._m.commits[0] += 1
            self._charge(w0)
        for fn in list(self._listeners):
            fn()
        return gaps

    def ack(self, seqs: Iterable[int]) -> int:
        """Delete acknowledged batches; returns how many were still present."""
        keys = sorted(set(seqs))
        if not keys:
            return 0
        with self._writing("ack"):
            w0 = thread_write_bytes()
            try:
                self._w.execute("PRAGMA synchronous=NORMAL")
                head = self._m.head
                n, nbytes, nread, oldest, live = self._commit("ack", lambda: (
                    *delete_acked(self._w, keys, head), oldest_created(self._w),
                    live_pages(self._w)))  # fmt: skip
            except sqlite3.Error as exc:
                raise OutboxError(f"{self.path}: ack failed: {exc}") from exc
            finally:
                try:
                    self._w.execute("PRAGMA synchronous=FULL")
                except sqlite3.Error as exc:  # only on a closed or broken connection
                    log.error("outbox_pragma_failed path=%s err=%s", self.path, exc)
            m = self._m
            m.total_bytes, m.depth = m.total_bytes - nbytes, m.depth - n
            m.readings -= nread
            m.oldest_ns, m.live_pages = oldest, live
            self._m.commits[1] += 1
            self._charge(w0)
            self._refresh()
            return n

    def hold_through(self, seq: int) -> None:
        """Durably record that batches up to ``seq`` may reach the broker from now on: they are
        never dropped (a gap notice must not name a batch the consumer may have). The uplink
        calls it before publishing past the previous mark, a few dozen batches ahead."""
        with self._writing("hold"):
            if seq <= self._m.held:
                return
            self._commit("hold", lambda: self._w.execute(
                "UPDATE held SET seq = ? WHERE id = 0", (seq,)))  # fmt: skip
            self._m.held = seq

    def transact(self, kind: str, body: Callable[[sqlite3.Connection, int], _T]) -> _T:
        """``body(connection, head seq)`` in one write transaction of its own, under the write
        lock (the runs of the daemon, outbox/epochs.py). OutboxError when it fails."""
        with self._writing(kind):
            head = self._m.head.seq
            return self._commit(kind, lambda: body(self._w, head))

    def _commit(self, kind: str, body: Callable[[], _T]) -> _T:
        """``body`` in one write transaction; on a full disk the reserve is released and it is
        tried once more. Records the outcome in ``health``; raises OutboxError."""
        for attempt in (0, 1):
            try:
                self._w.execute("BEGIN IMMEDIATE")
                out = body()
                self._w.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                if attempt == 0 and is_full(exc) and self.reserve.release():
                    continue
                msg = f"{self.path}: {kind} failed: {exc}"
                self.health.failed(kind, msg)
                raise OutboxError(msg) from exc
            self.health.ok(kind)
            return out
        raise OutboxError(f"{self.path}: {kind} failed")  # not reached

    def _rollback(self) -> None:
        self._appender.rollback()

    def _measure(self) -> Footprint:
        try:
            fp = measure(self.path, self.reserve.path)
        except OSError as exc:
            raise OutboxError(f"{self.path}: cannot measure the outbox files: {exc}") from exc
        self._m.fp = fp
        return fp

    def _refresh(self) -> None:
        """Measure the files after a commit, for ``stats`` (best effort)."""
        try:
            self._measure()
        except OutboxError as exc:
            log.debug("outbox_measure_failed err=%s", exc)

    def refresh(self) -> None:
        """Measure the files and the filesystem now (``stats`` reports the last measurement)."""
        self._refresh()

    def _rewrite(self, rewrite: Rewrite) -> tuple[Head, int, int, int]:
        try:
            grow = may_grow(self._measure(), self.reserve.size if self.reserve.held else 0,
                            self._m.total_bytes)  # fmt: skip
            return rewrite_rows(self._w, str(self.path), self._m.head, self._m.depth, rewrite,
                                grow)  # fmt: skip
        except Exception as exc:
            if not isinstance(exc, sqlite3.Error):  # _commit rolls back only SQLite errors
                self._rollback()
            raise

    def rewrite_room(self) -> int:
        """Bytes of waiting batches one ``rewrite_pending`` transaction can likely carry: the WAL
        holds the whole rewrite until it commits (the old pages and the new, with page slack:
        about three times its bytes), in its allowance, the reserve and what the disk has free."""
        fp = self._measure()
        wal = self.wal_limit + max(0, fp.fs_free) + (self.reserve.size if self.reserve.held else 0)
        return max(0, wal // 3 - 2 * GAP_RESERVE_BYTES)

    def drop_oldest(self, nbytes: int) -> list[BatchLike]:
        """Drop the oldest waiting batches worth ``nbytes``, even those held for the broker, with
        a signed gap notice, in one transaction: only before re-signing everything (rechain),
        when the held mark belongs to a chain the broker no longer continues."""
        with self._writing("rewrite"):
            w0 = thread_write_bytes()
            try:
                gaps = self._appender.drop(nbytes)
            except OutboxError as exc:
                self.health.failed("rewrite", str(exc))
                raise
            self._m.commits[0] += 1
            self._charge(w0)
        return gaps

    def rewrite_pending(self, rewrite: Rewrite) -> Head:
        """Replace EVERY waiting batch in one durable transaction (outbox/rechain.py: moving the
        chain past seqs a restored state had already published). Under the write lock
        ``rewrite(head, depth, waiting)`` gets the head, the number of waiting batches and those
        batches (seq order, read page by page) and yields the new batches: increasing seqs (holes
        only where batches were dropped), all above the old head (so a writer that signed from
        the old head fails its append and re-signs); the last becomes the head. OutboxError and
        nothing changed when the rewrite or the disk fails."""
        with self._writing("rewrite"):
            w0 = thread_write_bytes()
            head, depth, readings, total, oldest, live = self._commit("rewrite", lambda: (
                *self._rewrite(rewrite), oldest_created(self._w), live_pages(self._w)))
            m = self._m
            m.head, m.depth, m.readings, m.total_bytes = head, depth, readings, total
            m.oldest_ns, m.live_pages = oldest, live
            self._m.commits[0] += 1
            self._charge(w0)
        for fn in list(self._listeners):
            fn()
        return head

    def _charge(self, w0: int) -> None:
        if self._m.written >= 0 and w0 >= 0:
            self._m.written += thread_write_bytes() - w0

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
        """From memory (``Mirror.stats``): never waits for the disk."""
        return self._m.stats(cap=self.cap_bytes, wal_limit=self.wal_limit, reserve=self.reserve,
                             health=self.health)  # fmt: skip

    def close(self) -> None:
        with self._wlock, self._rlock:
            try:
                self._r.close()
                self._w.close()
            except sqlite3.Error as exc:
                raise OutboxError(f"{self.path}: close failed: {exc}") from exc

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
