"""The outbox's SQLite layout and connection settings.

Tables: ``batches`` (one row per signed batch, keyed by seq, with its digest and COSE bytes),
``head`` (one row: chain head seq/prev when the table is empty, and the persistent drop counters),
``held`` (one row: batches up to this seq may have reached the broker, so they are never
dropped; see ``Outbox.hold_through``) and ``epochs`` (one row per daemon start: anti-rollback and
the clean-stop mark, see ``epochs``).

Settings: WAL with ``synchronous=FULL``; 1 KiB pages (a commit rewrites whole pages: with 1 KiB a
lone 200-reading batch costs ~3x its size on disk, with 4 KiB ~6x, see benchmarks.pipeline);
``secure_delete=OFF`` (Debian builds SQLite with it on, which would zero — i.e. write a second
time — every acked batch; signed readings are not secrets); the WAL is checkpointed at half its
allowance and truncated back to it (``space.wal_limit``), so its size stays inside the cap.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from edge_agent.errors import OutboxError
from edge_agent.outbox import epochs
from edge_agent.outbox.records import BatchLike, Head

log = logging.getLogger(__name__)

GENESIS_PREV = bytes(32)
PAGE_SIZE = 1024
WAL_FRAME = PAGE_SIZE + 24
# each connection's page cache, KiB (SQLite's default is 2,000 KiB a connection, so the outbox's
# two grew to ~4.5 MiB of RSS behind a lagging broker and kept it): the b-tree's interior pages
# and both ends of the table fit; batch bodies are read once, from the WAL or the OS page cache
CACHE_KIB = 256
SCHEMA_VERSION = 3  # 2: the ``held`` table; 3: ``epochs`` (outbox/epochs.py)
INSERT = "INSERT INTO batches VALUES (?,?,?,?,?,?,?,?,?,?)"

SCHEMA = """
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
CREATE TABLE IF NOT EXISTS held (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    seq INTEGER NOT NULL
);
"""

Row = tuple[int, str, int, int, int, int, int, int, bytes, bytes]


def connect(path: Path, wal_limit: int) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA page_size={PAGE_SIZE}")  # only takes effect on a new file
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        conn.close()
        raise OutboxError(f"{path}: SQLite refused WAL mode (got {mode})")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA secure_delete=OFF")
    conn.execute(f"PRAGMA wal_autocheckpoint={max(16, min(1000, wal_limit // 2 // WAL_FRAME))}")
    conn.execute(f"PRAGMA journal_size_limit={wal_limit}")
    conn.execute("PRAGMA busy_timeout=10000")
    conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
    return conn


def create(conn: sqlite3.Connection) -> None:
    """Create or upgrade the tables (one transaction)."""
    conn.execute("BEGIN IMMEDIATE")
    for statement in _statements():
        conn.execute(statement)
    conn.execute("INSERT OR IGNORE INTO head VALUES (0, 0, ?, 0, 0, 0, 0)", (GENESIS_PREV,))
    conn.execute("INSERT OR IGNORE INTO held VALUES (0, 0)")
    if conn.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    conn.execute("COMMIT")


@dataclass(frozen=True, slots=True)
class State:
    """What the store keeps in memory, as found in the file."""

    head: Head
    counters: list[int]  # batches, readings, bytes dropped; gap notices
    held: int
    depth: int
    readings: int
    total_bytes: int
    oldest_ns: int | None
    live_pages: int


def load_state(conn: sqlite3.Connection) -> State:
    q = conn.execute
    h = q("SELECT seq, prev, batches_dropped, readings_dropped, bytes_dropped, gaps"
          " FROM head WHERE id = 0").fetchone()  # fmt: skip
    head = Head(int(h[0]), bytes(h[1]))
    held = int(q("SELECT seq FROM held WHERE id = 0").fetchone()[0])
    depth, readings, total = q(
        "SELECT count(*), coalesce(sum(CASE kind WHEN 'data' THEN n_readings ELSE 0 END), 0),"
        " coalesce(sum(bytes), 0) FROM batches"
    ).fetchone()
    top = q("SELECT seq, digest FROM batches ORDER BY seq DESC LIMIT 1").fetchone()
    if top is not None and int(top[0]) > head.seq:
        head = Head(int(top[0]), bytes(top[1]))
    counters = [int(h[2]), int(h[3]), int(h[4]), int(h[5])]
    return State(head, counters, held, int(depth), int(readings), int(total),
                 oldest_created(conn), live_pages(conn))


def _statements() -> list[str]:
    return [s.strip() for s in (SCHEMA + ";" + epochs.SCHEMA).split(";") if s.strip()]


def row(b: BatchLike) -> Row:
    return (
        b.seq, b.kind, b.n_readings, int(b.alarm), b.t_first_ns, b.t_last_ns, len(b.cose),
        time.time_ns(), b.digest, b.cose,
    )  # fmt: skip


def delete_acked(conn: sqlite3.Connection, keys: list[int], head: Head) -> tuple[int, int, int]:
    """Inside a transaction: delete acknowledged seqs; (batches, bytes, data readings) deleted.
    When the newest batch goes, the head row takes over the chain head."""
    marks = ",".join("?" * len(keys))
    found = conn.execute(
        "SELECT count(*), coalesce(sum(bytes), 0),"
        " coalesce(sum(CASE kind WHEN 'data' THEN n_readings ELSE 0 END), 0)"
        f" FROM batches WHERE seq IN ({marks})",
        keys,
    ).fetchone()
    n = int(found[0])
    conn.execute(f"DELETE FROM batches WHERE seq IN ({marks})", keys)
    if n and conn.execute("SELECT 1 FROM batches WHERE seq >= ?", (head.seq,)).fetchone() is None:
        conn.execute("UPDATE head SET seq=?, prev=? WHERE id = 0", (head.seq, head.prev))
    return n, int(found[1]), int(found[2])


def oldest_created(conn: sqlite3.Connection) -> int | None:
    """When the oldest waiting batch was stored (wall ns), None when there is none."""
    r = conn.execute("SELECT created FROM batches ORDER BY seq LIMIT 1").fetchone()
    return None if r is None else int(r[0])


def live_pages(conn: sqlite3.Connection) -> int:
    """Pages in use: the page count minus SQLite's freelist."""
    pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
    return pages - int(conn.execute("PRAGMA freelist_count").fetchone()[0])


def restart_wal(conn: sqlite3.Connection, where: str) -> None:
    """Checkpoint and restart the WAL, so the next commit reuses its blocks instead of needing
    new ones (what a full disk does not have). Best effort."""
    try:
        conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
    except sqlite3.Error as exc:
        log.debug("outbox_checkpoint_failed path=%s err=%s", where, exc)


def is_full(exc: BaseException) -> bool:
    """SQLITE_FULL or an ENOSPC/EDQUOT underneath: the disk (or the quota) has no room."""
    name = getattr(exc, "sqlite_errorname", "")
    if name == "SQLITE_FULL":
        return True
    text = str(exc).lower()
    return "disk is full" in text or "no space left" in text or "quota" in text
