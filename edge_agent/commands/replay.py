"""Replay protection that survives restarts: seen command ids and each signer's last counter.

SQLite (WAL, synchronous=FULL) in the state directory. ``admit`` is atomic: a command is recorded
before it is executed, so a crash between the two can never let the same order run twice.

Errors: ``admit`` raises only ``CommandRefused`` -- ``replayed_id`` / ``replayed_counter`` for a
replay, ``replay_store_unavailable`` when the store cannot be opened, read or written (a corrupt or
unwritable file, a full disk): without it a replay cannot be ruled out, so the command is refused,
and the caller still audits and answers it. A store that failed is reopened on the next command.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from pathlib import Path

from edge_agent.errors import CommandRefused, CommandStoreError

log = logging.getLogger(__name__)

UNAVAILABLE = "replay_store_unavailable"


def open_state_db(path: Path, schema: tuple[str, ...]) -> sqlite3.Connection:
    """A SQLite file of the command state (WAL, synchronous=FULL) with ``schema`` applied;
    CommandStoreError naming the file when it cannot be opened or is not a usable database."""
    db: sqlite3.Connection | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        for stmt in schema:
            db.execute(stmt)
    except (sqlite3.Error, OSError) as exc:
        if db is not None:
            with contextlib.suppress(sqlite3.Error):
                db.close()
        raise CommandStoreError(f"{path}: {exc}") from exc
    return db


class ReplayGuard:
    SCHEMA = (
        "CREATE TABLE IF NOT EXISTS seen (id BLOB PRIMARY KEY, exp INTEGER)",
        "CREATE TABLE IF NOT EXISTS counters (kid BLOB PRIMARY KEY, ctr INTEGER)",
    )

    def __init__(self, path: Path) -> None:
        """Opens the store now; if that fails the guard still exists and refuses every command
        ``replay_store_unavailable`` until a later attempt to open it succeeds."""
        self.path = path
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self.failures = 0
        with self._lock, contextlib.suppress(CommandStoreError):
            self._open()

    def _open(self) -> sqlite3.Connection:
        if self._db is None:
            try:
                self._db = open_state_db(self.path, self.SCHEMA)
            except CommandStoreError as exc:
                self._failed(exc)
                raise
        return self._db

    def _failed(self, exc: Exception) -> None:
        self.failures += 1
        if self.failures == 1:
            log.error("replay_store_unavailable path=%s err=%s", self.path, exc)
        else:
            log.debug("replay_store_unavailable path=%s err=%s", self.path, exc)

    def admit(self, kid: bytes, cmd_id: bytes, ctr: int, exp: int, now_s: int) -> None:
        """Record the command or raise CommandRefused('replayed_id' | 'replayed_counter' |
        'replay_store_unavailable')."""
        with self._lock:
            try:
                db = self._open()
            except CommandStoreError as exc:
                raise CommandRefused(UNAVAILABLE, str(exc)) from None
            try:
                self._admit(db, kid, cmd_id, ctr, exp, now_s)
            except sqlite3.Error as exc:
                self._failed(exc)
                with contextlib.suppress(sqlite3.Error):
                    db.close()
                self._db = None  # reopened on the next command
                raise CommandRefused(UNAVAILABLE, f"{self.path}: {exc}") from None
            if self.failures:
                log.info("replay_store_recovered path=%s after_failures=%d", self.path,
                         self.failures)
                self.failures = 0

    @staticmethod
    def _admit(db: sqlite3.Connection, kid: bytes, cmd_id: bytes, ctr: int, exp: int,
               now_s: int) -> None:
        db.execute("BEGIN IMMEDIATE")
        try:
            if db.execute("SELECT 1 FROM seen WHERE id=?", (cmd_id,)).fetchone():
                raise CommandRefused("replayed_id", cmd_id.hex())
            row = db.execute("SELECT ctr FROM counters WHERE kid=?", (kid,)).fetchone()
            if row is not None and ctr <= int(row[0]):
                raise CommandRefused("replayed_counter", f"counter {ctr} <= last {row[0]}")
            db.execute("INSERT INTO seen VALUES (?, ?)", (cmd_id, exp))
            db.execute(
                "INSERT INTO counters VALUES (?, ?) ON CONFLICT(kid) DO UPDATE SET ctr=?",
                (kid, ctr, ctr),
            )
            # ids of expired commands can go: their counters still guard against replays
            db.execute("DELETE FROM seen WHERE exp < ?", (now_s - 86400,))
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise

    def last_counter(self, kid: bytes) -> int | None:
        """The signer's last admitted counter; CommandStoreError when the store is unusable."""
        with self._lock:
            db = self._open()
            try:
                row = db.execute("SELECT ctr FROM counters WHERE kid=?", (kid,)).fetchone()
            except sqlite3.Error as exc:
                raise CommandStoreError(f"{self.path}: {exc}") from exc
        return None if row is None else int(row[0])

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._db.close()
                self._db = None
