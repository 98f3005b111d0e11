"""What a gateway answers about a configuration bundle, signed with its own key, on
``<prefix>/<gateway>/config/res`` -- and kept until the broker acknowledged it.

Result payload (deterministic CBOR, small-int keys)::

    1 v       uint   1
    2 kind    tstr   "edge-agent/config-result"
    3 gw      tstr   the gateway
    4 ver     uint   the bundle's version (refused before its signature held: the version the
                     message claims, 0 if none)
    5 state   tstr   refused | applying | committed | rolled_back | unchanged
    6 reason  tstr   "" or why (refusals: malformed, wrong_alg, unknown_kid, wrong_role,
                     bad_signature, not_addressed, pinned, clock_unsynced, not_yet_valid,
                     expired, version_passed, busy, config_invalid, state_unwritable;
                     rollbacks: uplink_down, devices_worse, crash_loop, start_failed, pinned)
    7 t       int    when it was decided, Unix ns
    8 kid     bstr   the bundle's signer (h'' before the signature held)
    9 hash    bstr   the bundle's configuration hash (h'' when it could not be decoded)
    10 detail tstr   for humans: every config problem, one per line, at most 4 KiB
    11 evid   map    probation evidence (committed, rolled_back): uplink_connected, up, total,
                     before_up, before_total, min_up_ratio, starts, window_s, failing [tstr]

A store of them (SQLite, WAL, synchronous=FULL, next to the command state): every result is
stored before it is published, published by the uplink after every connect until its PUBACK (the
``ResultSource`` protocol of uplink/results.py), the newest ``MAX_COUNT`` kept.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2

from edge_agent.commands.replay import open_state_db
from edge_agent.errors import CommandStoreError, VerifyError

VERSION = 1
KIND = "edge-agent/config-result"
MAX_DETAIL = 4096
MAX_COUNT = 200
FINAL = frozenset({"refused", "committed", "rolled_back", "unchanged"})


@dataclass(frozen=True, slots=True)
class RolloutResult:
    gateway: str
    version: int
    state: str
    reason: str
    t_ns: int
    kid: bytes = b""
    hash: bytes = b""
    detail: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)

    def json(self) -> dict[str, Any]:
        return {"gateway": self.gateway, "version": self.version, "state": self.state,
                "reason": self.reason, "t_ns": self.t_ns, "kid": self.kid.hex(),
                "hash": self.hash.hex(), "detail": self.detail, "evidence": self.evidence}


def encode_result(r: RolloutResult) -> bytes:
    m: dict[int, Any] = {1: VERSION, 2: KIND, 3: r.gateway, 4: r.version, 5: r.state,
                         6: r.reason, 7: r.t_ns, 8: r.kid, 9: r.hash}
    if r.detail:
        m[10] = r.detail[:MAX_DETAIL]
    if r.evidence:
        m[11] = r.evidence
    return cbor2.dumps(m, canonical=True)


def decode_result(payload: bytes) -> RolloutResult:
    """A result payload (signature already checked by the caller); VerifyError if not one."""
    try:
        m = cbor2.loads(payload)
    except Exception as exc:  # cbor2 raises many types on garbage
        raise VerifyError(f"config result payload is not CBOR ({type(exc).__name__})") from None
    if not isinstance(m, dict) or m.get(1) != VERSION or m.get(2) != KIND:
        raise VerifyError("not a configuration result payload")
    gw, ver, state, reason, t, kid, h = (m.get(k) for k in (3, 4, 5, 6, 7, 8, 9))
    if not (isinstance(gw, str) and type(ver) is int and isinstance(state, str)
            and isinstance(reason, str) and type(t) is int and isinstance(kid, bytes)
            and isinstance(h, bytes)):
        raise VerifyError("config result payload: a required key is missing or mistyped")
    detail = m.get(10, "")
    evidence = m.get(11, {})
    if not isinstance(detail, str) or not isinstance(evidence, dict):
        raise VerifyError("config result payload: detail or evidence mistyped")
    return RolloutResult(gw, ver, state, reason, t, kid, h, detail, evidence)


class RolloutResults:
    """Signed rollout results, durable until acknowledged (thread-safe)."""

    SCHEMA = ("CREATE TABLE IF NOT EXISTS results (n INTEGER PRIMARY KEY AUTOINCREMENT, "
              "version INTEGER NOT NULL, state TEXT NOT NULL, cose BLOB NOT NULL, "
              "acked INTEGER NOT NULL DEFAULT 0)",)

    def __init__(self, path: Path, max_count: int = MAX_COUNT) -> None:
        """CommandStoreError when the file cannot be opened."""
        self.path = path
        self.max_count = max_count
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = open_state_db(path, self.SCHEMA)
        try:
            rows = self._db.execute("SELECT n, cose FROM results WHERE acked=0 ORDER BY n")
            self._unacked = {int(n): bytes(c) for n, c in rows.fetchall()}
        except sqlite3.Error as exc:
            self.close()
            raise CommandStoreError(f"{path}: {exc}") from exc

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise CommandStoreError(f"{self.path}: closed")
        return self._db

    def add(self, result: RolloutResult, cose: bytes) -> int:
        with self._lock:
            db = self._conn()
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    cur = db.execute("INSERT INTO results (version, state, cose) VALUES (?, ?, ?)",
                                     (result.version, result.state, cose))
                    n = int(cur.lastrowid or 0)
                    db.execute("DELETE FROM results WHERE n <= ?", (n - self.max_count,))
                    db.execute("COMMIT")
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise CommandStoreError(f"{self.path}: {exc}") from exc
            self._unacked[n] = cose
            for old in [k for k in self._unacked if k <= n - self.max_count]:
                del self._unacked[old]
        return n

    def unacked(self) -> list[tuple[int, bytes]]:
        with self._lock:
            return sorted(self._unacked.items())

    def acked(self, key: int) -> None:
        with self._lock:
            if self._unacked.pop(key, None) is None:
                return
            with contextlib.suppress(sqlite3.Error, CommandStoreError):
                self._conn().execute("UPDATE results SET acked=1 WHERE n=?", (key,))

    def recent(self, limit: int = 20) -> list[tuple[bytes, bool]]:
        """(signed result, acknowledged) of the newest ``limit``, oldest first."""
        with self._lock:
            try:
                rows = self._conn().execute(
                    "SELECT cose, acked FROM results ORDER BY n DESC LIMIT ?",
                    (max(0, limit),)).fetchall()
            except sqlite3.Error as exc:
                raise CommandStoreError(f"{self.path}: {exc}") from exc
        return [(bytes(c), bool(a)) for c, a in reversed(rows)]

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._db.close()
                self._db = None


class MemoryResults:
    """Where results go when the durable store cannot be opened: published while running."""

    def __init__(self) -> None:
        self._items: dict[int, bytes] = {}
        self._n = 0

    def add(self, result: RolloutResult, cose: bytes) -> int:
        self._n += 1
        self._items[self._n] = cose
        return self._n

    def unacked(self) -> list[tuple[int, bytes]]:
        return sorted(self._items.items())

    def acked(self, key: int) -> None:
        self._items.pop(key, None)

    def close(self) -> None:
        self._items.clear()
