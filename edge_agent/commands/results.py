"""Signed command results that survive a restart, kept until the broker acknowledged them (and
a while after).

One SQLite file (WAL, synchronous=FULL) next to the replay state. Every result the gateway signs is
stored before it is published; the uplink publishes the ones not yet acknowledged (``unacked``)
after every (re)connect and marks one ``acked`` only on its PUBACK (paho's ``on_publish``), so a
result lost with a broken connection or a restart is published again -- at least once; a consumer
recognises a repeat by the command id. Kept: the newest ``max_count`` results and none older than
``max_age_s``, acknowledged or not (an answer older than that is no answer any more). ``find`` /
``recent`` serve ``edge-agent command show`` through the control socket.

Errors: ``CommandStoreError`` only (a file that cannot be opened, read or written). The caller
then still publishes the result, from memory.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.commands.model import Result, decode_result
from edge_agent.commands.replay import open_state_db
from edge_agent.errors import CommandStoreError, VerifyError
from edge_agent.trust.cose import parse1

log = logging.getLogger(__name__)

MAX_COUNT = 1000
MAX_AGE_S = 30 * 86400


@dataclass(frozen=True, slots=True)
class StoredResult:
    n: int  # storage order
    result: Result
    acked: bool  # the broker acknowledged it (PUBACK)

    def json(self) -> dict[str, Any]:
        r = self.result
        return {"id": r.id.hex(), "gateway": r.gateway, "ok": r.ok, "reason": r.reason,
                "t_ns": r.t_ns, "kid": r.kid.hex(), "value": r.value, "acked": self.acked}


class ResultStore:
    SCHEMA = (
        "CREATE TABLE IF NOT EXISTS results (n INTEGER PRIMARY KEY AUTOINCREMENT, id BLOB NOT NULL,"
        " t_ns INTEGER NOT NULL, cose BLOB NOT NULL, acked INTEGER NOT NULL DEFAULT 0)",
        "CREATE INDEX IF NOT EXISTS results_id ON results (id)",
    )

    def __init__(self, path: Path, *, max_count: int = MAX_COUNT, max_age_s: float = MAX_AGE_S,
                 clock: Callable[[], float] = time.time) -> None:
        """Opens the store now; CommandStoreError if it cannot."""
        self.path = path
        self.max_count = max_count
        self.max_age_s = max_age_s
        self._clock = clock
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = open_state_db(path, self.SCHEMA)
        self._unacked: dict[int, bytes] = {}
        try:
            with self._lock:
                self._reload()
        except sqlite3.Error as exc:
            self.close()
            raise CommandStoreError(f"{path}: {exc}") from exc

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise CommandStoreError(f"{self.path}: closed")
        return self._db

    def _reload(self) -> None:
        rows = self._conn().execute("SELECT n, cose FROM results WHERE acked=0 ORDER BY n")
        self._unacked = {int(n): bytes(c) for n, c in rows.fetchall()}

    def add(self, result: Result, cose: bytes) -> int:
        """Store a signed result (``cose``) before it is published; its key."""
        with self._lock:
            db = self._conn()
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    cur = db.execute("INSERT INTO results (id, t_ns, cose) VALUES (?, ?, ?)",
                                     (result.id, result.t_ns, cose))
                    n = int(cur.lastrowid or 0)
                    pruned = self._prune(db)
                    db.execute("COMMIT")
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
                    raise
                self._unacked[n] = cose
                if pruned:
                    self._reload()
            except sqlite3.Error as exc:
                raise CommandStoreError(f"{self.path}: {exc}") from exc
        return n

    def _prune(self, db: sqlite3.Connection) -> int:
        oldest_ns = int((self._clock() - self.max_age_s) * 1e9)
        n = db.execute("DELETE FROM results WHERE t_ns < ?", (oldest_ns,)).rowcount
        n += db.execute(
            "DELETE FROM results WHERE n <= (SELECT n FROM results ORDER BY n DESC LIMIT 1 "
            "OFFSET ?)", (self.max_count,)).rowcount
        return max(n, 0)

    def unacked(self) -> list[tuple[int, bytes]]:
        """(key, signed result) of every result the broker has not acknowledged, oldest first.
        From memory: cheap enough for the uplink to ask on every turn of its loop."""
        with self._lock:
            return sorted(self._unacked.items())

    def acked(self, key: int) -> None:
        """The broker acknowledged result ``key`` (PUBACK). Called from the uplink thread."""
        with self._lock:
            if self._unacked.pop(key, None) is None:
                return
            try:
                self._conn().execute("UPDATE results SET acked=1 WHERE n=?", (key,))
            except (sqlite3.Error, CommandStoreError) as exc:
                # not fatal: it is published again after the next reconnect or restart
                log.warning("command_result_ack_not_stored n=%d err=%s", key, exc)

    def find(self, cmd_id: bytes) -> list[StoredResult]:
        """Every stored result for a command id (a replayed id has several), oldest first."""
        return self._select("SELECT n, cose, acked FROM results WHERE id=? ORDER BY n", (cmd_id,))

    def recent(self, limit: int = 20) -> list[StoredResult]:
        """The newest ``limit`` results, oldest first."""
        rows = self._select("SELECT n, cose, acked FROM results ORDER BY n DESC LIMIT ?",
                            (max(0, limit),))
        return rows[::-1]

    def _select(self, sql: str, args: tuple[object, ...]) -> list[StoredResult]:
        with self._lock:
            try:
                rows = self._conn().execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise CommandStoreError(f"{self.path}: {exc}") from exc
        out = []
        for n, cose, acked in rows:
            try:
                res = decode_result(parse1(bytes(cose))[2])
            except VerifyError as exc:  # our own signed bytes: only a damaged file does this
                raise CommandStoreError(f"{self.path}: result {n}: {exc}") from exc
            out.append(StoredResult(int(n), res, bool(acked)))
        return out

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._db.close()
                self._db = None


def deliver_result(store: ResultStore | None, res: Result, cose: bytes,
                   changed: Callable[[], None], publish: Callable[[bytes], None]) -> None:
    """Hand a signed result on: to the durable ``store`` (then ``changed()``: the uplink
    publishes it until the broker acknowledged it); without a store, or when storing fails, to
    ``publish`` (memory only)."""
    if store is not None:
        try:
            store.add(res, cose)
        except CommandStoreError as exc:
            log.warning("command_result_not_stored id=%s err=%s (published from memory)",
                        res.id.hex() or "-", exc)
        else:
            changed()
            return
    publish(cose)
