"""Replay protection that survives restarts: seen command ids and each signer's last counter.

SQLite (WAL, synchronous=FULL) in the state directory. ``admit`` is atomic: a command is recorded
before it is executed, so a crash between the two can never let the same order run twice.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from edge_agent.errors import CommandRefused


class ReplayGuard:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("CREATE TABLE IF NOT EXISTS seen (id BLOB PRIMARY KEY, exp INTEGER)")
        self._db.execute("CREATE TABLE IF NOT EXISTS counters (kid BLOB PRIMARY KEY, ctr INTEGER)")

    def admit(self, kid: bytes, cmd_id: bytes, ctr: int, exp: int, now_s: int) -> None:
        """Record the command or raise CommandRefused('replayed_id' | 'replayed_counter')."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if self._db.execute("SELECT 1 FROM seen WHERE id=?", (cmd_id,)).fetchone():
                    raise CommandRefused("replayed_id", cmd_id.hex())
                row = self._db.execute("SELECT ctr FROM counters WHERE kid=?", (kid,)).fetchone()
                if row is not None and ctr <= int(row[0]):
                    raise CommandRefused("replayed_counter", f"counter {ctr} <= last {row[0]}")
                self._db.execute("INSERT INTO seen VALUES (?, ?)", (cmd_id, exp))
                self._db.execute(
                    "INSERT INTO counters VALUES (?, ?) ON CONFLICT(kid) DO UPDATE SET ctr=?",
                    (kid, ctr, ctr),
                )
                # ids of expired commands can go: their counters still guard against replays
                self._db.execute("DELETE FROM seen WHERE exp < ?", (now_s - 86400,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def last_counter(self, kid: bytes) -> int | None:
        with self._lock:
            row = self._db.execute("SELECT ctr FROM counters WHERE kid=?", (kid,)).fetchone()
        return None if row is None else int(row[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
