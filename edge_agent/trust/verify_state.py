"""Where ``ChainVerifier`` keeps what it knows: SQLite, a file (an archiver resuming across its own
restarts) or a private temporary database (a one-shot check). Every lookup is by primary key or an
index range; nothing is scanned.

Per gateway (``chains``): the next seq to link (everything below it is linked or recorded
missing), the digest of the batch before it, the lowest seq linked, the kids it is pinned to.
``seen``: the digest (and prev) of every seq ever received — duplicates and conflicts are judged
against the first copy, however old. ``claims``: the seq ranges gap and resume notices explain,
merged into disjoint intervals; ``dropped``: those gap notices alone announced as never sent.
``missing``: seq ranges given up waiting for, as disjoint pieces each marked explained or not.
Counters and the first problems / notices are kept too, so a report after a restart covers
everything ever fed.

Writes happen inside one transaction that ``commit()`` ends (``synchronous=FULL`` in WAL mode for a
file): the caller commits when what it fed is recorded, e.g. before acknowledging it to a broker.

One process at a time: a state file is locked (``flock`` on ``DB.lock`` beside it, holding the
holder's pid) from open to close. A second archiver on the same state would take the MQTT session
(the client id the state keeps) from the first and report the other's batches as gaps; it is
refused at once with ``StateInUse`` naming the holder's pid. The lock goes with the process (a
``kill -9`` frees it); the lock file stays.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from edge_agent.errors import VerifyError

SCHEMA_VERSION = 1
MAX_EVENTS = 100  # problem / notice lines kept per kind (counters keep counting)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS chains (
    id INTEGER PRIMARY KEY, gateway TEXT NOT NULL UNIQUE,
    next_seq INTEGER, last_digest BLOB, start INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS pins (gw INTEGER NOT NULL, kid BLOB NOT NULL, PRIMARY KEY (gw, kid))
    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS seen (
    gw INTEGER NOT NULL, seq INTEGER NOT NULL, digest BLOB NOT NULL, prev BLOB NOT NULL,
    PRIMARY KEY (gw, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS claims (
    gw INTEGER NOT NULL, first INTEGER NOT NULL, last INTEGER NOT NULL, PRIMARY KEY (gw, first)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dropped (
    gw INTEGER NOT NULL, first INTEGER NOT NULL, last INTEGER NOT NULL, PRIMARY KEY (gw, first)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS missing (
    gw INTEGER NOT NULL, first INTEGER NOT NULL, last INTEGER NOT NULL,
    explained INTEGER NOT NULL, PRIMARY KEY (gw, first)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS missing_open ON missing (gw, first) WHERE explained = 0;
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, kind TEXT NOT NULL, text TEXT NOT NULL);
"""

Range = tuple[int, int]
Seen = tuple[bytes, bytes]  # digest, prev


class StateInUse(VerifyError):
    """Another process holds the state file (``pid`` when it could be read, else None)."""

    def __init__(self, path: Path, pid: int | None) -> None:
        who = f"pid {pid}" if pid is not None else "a process whose pid is not written yet"
        super().__init__(f"{path}: in use by another edge-agent verify ({who}); one archiver "
                         "per state file")
        self.pid = pid


def lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def _holder(fd: int) -> int | None:
    """The pid the holder wrote in the lock file (it writes it right after taking the lock)."""
    for _ in range(20):
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        if text.isdigit():
            return int(text)
        time.sleep(0.01)
    return None


def _lock(path: Path) -> int:
    """Take the state's lock; the open fd (its lifetime is the lock's). StateInUse if held."""
    lock = lock_path(path)
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise VerifyError(f"{lock}: cannot open the state's lock file: "
                          f"{exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = _holder(fd)
        os.close(fd)
        raise StateInUse(path, pid) from None
    except OSError as exc:
        os.close(fd)
        raise VerifyError(f"{lock}: cannot lock: {exc.strerror or exc}") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


class VerifyState:
    def __init__(self, path: Path | None = None) -> None:
        """``path`` None: a private temporary database, deleted on close. A file is locked for
        this process until ``close`` (StateInUse when another holds it)."""
        self.path = path
        where = str(path) if path is not None else "temporary verify state"
        self._lock_fd = _lock(path) if path is not None else None
        try:
            self._db = sqlite3.connect(
                "" if path is None else str(path), isolation_level=None, check_same_thread=False
            )
            if path is not None:
                mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise VerifyError(f"{where}: SQLite refused WAL mode (got {mode})")
                self._db.execute("PRAGMA synchronous=FULL")
            else:
                self._db.execute("PRAGMA synchronous=OFF")
            self._db.executescript(_SCHEMA)
            version = self.meta("schema")
            if version is None:
                self.set_meta("schema", str(SCHEMA_VERSION))
            elif version != str(SCHEMA_VERSION):
                raise VerifyError(f"{where}: state schema {version}, this version reads "
                                  f"{SCHEMA_VERSION}")  # fmt: skip
            self.commit()
        except sqlite3.DatabaseError as exc:
            self._unlock()
            raise VerifyError(f"{where}: cannot open verify state: {exc}") from exc
        except BaseException:
            self._unlock()
            raise
        self.where = where

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # frees the flock
            self._lock_fd = None

    # -- transactions --------------------------------------------------------------------------

    def _w(self, sql: str, args: Iterable[object] = ()) -> sqlite3.Cursor:
        if not self._db.in_transaction:
            self._db.execute("BEGIN IMMEDIATE")
        return self._db.execute(sql, tuple(args))

    def _r(self, sql: str, args: Iterable[object] = ()) -> list[Any]:
        return self._db.execute(sql, tuple(args)).fetchall()

    def commit(self) -> None:
        """Make everything written so far durable."""
        if self._db.in_transaction:
            self._db.execute("COMMIT")

    def savepoint(self) -> None:
        """Start a change to be undone by ``rollback_savepoint`` (call after ``commit``)."""
        self._db.execute("SAVEPOINT report")

    def rollback_savepoint(self) -> None:
        self._db.execute("ROLLBACK TO report")
        self._db.execute("RELEASE report")

    def close(self) -> None:
        try:
            self.commit()
            self._db.close()
        finally:
            self._unlock()

    # -- meta, counters, events ----------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        rows = self._r("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    def set_meta(self, key: str, value: str) -> None:
        self._w("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def counters(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in self._r("SELECT name, value FROM counters")}

    def save_counters(self, c: dict[str, int]) -> None:
        self._db_many("INSERT OR REPLACE INTO counters VALUES (?, ?)", c.items())

    def _db_many(self, sql: str, rows: Iterable[tuple[object, ...]]) -> None:
        if not self._db.in_transaction:
            self._db.execute("BEGIN IMMEDIATE")
        self._db.executemany(sql, rows)

    def events(self, kind: str) -> list[str]:
        return [str(r[0]) for r in self._r("SELECT text FROM events WHERE kind = ? ORDER BY id",
                                           (kind,))]  # fmt: skip

    def add_event(self, kind: str, text: str) -> bool:
        """Keep the line if fewer than MAX_EVENTS of its kind are kept; True when kept."""
        n = self._r("SELECT count(*) FROM events WHERE kind = ?", (kind,))[0][0]
        if int(n) >= MAX_EVENTS:
            return False
        self._w("INSERT INTO events (kind, text) VALUES (?, ?)", (kind, text))
        return True

    # -- gateways and pins ---------------------------------------------------------------------

    def chains(self) -> list[tuple[int, str, int | None, bytes | None, int]]:
        return [
            (int(r[0]), str(r[1]), None if r[2] is None else int(r[2]),
             None if r[3] is None else bytes(r[3]), int(r[4]))
            for r in self._r("SELECT id, gateway, next_seq, last_digest, start FROM chains")
        ]  # fmt: skip

    def add_chain(self, gateway: str) -> int:
        cur = self._w("INSERT INTO chains (gateway, start) VALUES (?, 0)", (gateway,))
        assert cur.lastrowid is not None
        return cur.lastrowid

    def save_chain(
        self, gw: int, next_seq: int | None, last_digest: bytes | None, start: int
    ) -> None:
        self._w("UPDATE chains SET next_seq = ?, last_digest = ?, start = ? WHERE id = ?",
                (next_seq, last_digest, start, gw))  # fmt: skip

    def pins(self) -> list[tuple[str, bytes]]:
        return [(str(r[0]), bytes(r[1])) for r in self._r(
            "SELECT c.gateway, p.kid FROM pins p JOIN chains c ON c.id = p.gw")]  # fmt: skip

    def add_pin(self, gw: int, kid: bytes) -> None:
        self._w("INSERT OR IGNORE INTO pins VALUES (?, ?)", (gw, kid))

    # -- seen batches --------------------------------------------------------------------------

    def seen(self, gw: int, seq: int) -> Seen | None:
        rows = self._r("SELECT digest, prev FROM seen WHERE gw = ? AND seq = ?", (gw, seq))
        return (bytes(rows[0][0]), bytes(rows[0][1])) if rows else None

    def add_seen(self, gw: int, seq: int, digest: bytes, prev: bytes) -> None:
        self._w("INSERT INTO seen VALUES (?, ?, ?, ?)", (gw, seq, digest, prev))

    def seen_within(self, gw: int, a: int, b: int, limit: int = 10) -> tuple[int, list[int]]:
        """How many seqs a..b were seen, and the first ``limit`` of them."""
        n = self._r("SELECT count(*) FROM seen WHERE gw = ? AND seq BETWEEN ? AND ?", (gw, a, b))
        first = self._r("SELECT seq FROM seen WHERE gw = ? AND seq BETWEEN ? AND ? ORDER BY seq"
                        " LIMIT ?", (gw, a, b, limit))  # fmt: skip
        return int(n[0][0]), [int(r[0]) for r in first]

    def seen_from(self, gw: int, seq: int) -> list[tuple[int, bytes, bytes]]:
        """Every seq >= ``seq`` seen (the reorder window at a restart)."""
        return [(int(r[0]), bytes(r[1]), bytes(r[2])) for r in self._r(
            "SELECT seq, digest, prev FROM seen WHERE gw = ? AND seq >= ? ORDER BY seq",
            (gw, seq))]  # fmt: skip

    # -- interval tables -----------------------------------------------------------------------

    def _around(
        self, table: str, gw: int, a: int, b: int, extra: str = ""
    ) -> list[tuple[int, ...]]:
        """Rows of ``table`` (disjoint intervals keyed by first) overlapping a..b: the one starting
        at or before a, then those starting inside a..b. Two index probes, no scan."""
        cols = "first, last" + (", explained" if table == "missing" else "")
        before = self._r(f"SELECT {cols} FROM {table} WHERE gw = ? AND first <= ? {extra}"
                         " ORDER BY first DESC LIMIT 1", (gw, a))  # fmt: skip
        inside = self._r(f"SELECT {cols} FROM {table} WHERE gw = ? AND first > ? AND first <= ?"
                         f" {extra} ORDER BY first", (gw, a, b))  # fmt: skip
        rows = [tuple(int(x) for x in r) for r in before + inside]
        return [r for r in rows if r[1] >= a]

    def claim_end(self, gw: int, seq: int, table: str = "claims") -> int | None:
        """Last seq of the claim (or dropped range) covering ``seq``, if one does."""
        rows = self._around(table, gw, seq, seq)
        return rows[0][1] if rows else None

    def claims_over(self, gw: int, a: int, b: int) -> list[Range]:
        return [(r[0], r[1]) for r in self._around("claims", gw, a, b)]

    def add_claim(self, gw: int, a: int, b: int, table: str = "claims") -> None:
        """Merge a..b into the disjoint intervals of ``table`` (claims or dropped)."""
        for x, y in self._around(table, gw, max(1, a - 1), b + 1):
            a, b = min(a, x), max(b, y)
            self._w(f"DELETE FROM {table} WHERE gw = ? AND first = ?", (gw, x))
        self._w(f"INSERT INTO {table} VALUES (?, ?, ?)", (gw, a, b))

    def missing_at(self, gw: int, seq: int) -> tuple[int, int, bool] | None:
        rows = self._around("missing", gw, seq, seq)
        return (rows[0][0], rows[0][1], bool(rows[0][2])) if rows else None

    def open_missing_over(self, gw: int, a: int, b: int) -> list[Range]:
        return [(r[0], r[1]) for r in self._around("missing", gw, a, b, "AND explained = 0")]

    def put_missing(self, gw: int, a: int, b: int, explained: bool) -> None:
        self._w("INSERT OR REPLACE INTO missing VALUES (?, ?, ?, ?)", (gw, a, b, int(explained)))

    def drop_missing(self, gw: int, a: int) -> None:
        self._w("DELETE FROM missing WHERE gw = ? AND first = ?", (gw, a))

    def open_missing(self, limit: int) -> list[tuple[str, int, int]]:
        """The first ``limit`` unexplained ranges (walking the index of unexplained ones only)."""
        return [(str(r[0]), int(r[1]), int(r[2])) for r in self._r(
            "SELECT c.gateway, m.first, m.last FROM missing m JOIN chains c ON c.id = m.gw"
            " WHERE m.explained = 0 ORDER BY m.gw, m.first LIMIT ?", (limit,))]  # fmt: skip
