"""Runs of the daemon, recorded in the outbox next to the chain head: anti-rollback and stop marks.

Every daemon start begins an *epoch*: a random id, recorded durably (table ``epochs``) with the
chain head it starts from, the boot id and the wall time, before anything is published. The chain
witness carries the epoch and its start seq (trust/witness.py). An epoch's last seq is the start of
the next one (the head when the next daemon started), or the head for the current one. So a
witness proves a rollback by itself, whatever batches the outbox still holds:

* its epoch is known here and its seq is at most what this state knows that epoch reached: the
  state continues the witnessed chain (the same process signed both);
* its epoch is unknown here (started after this state was copied) or its seq lies past what this
  state knows of that epoch (the copy was taken while it ran): the state was restored from an older
  copy, and the chain must move past the witness (outbox/rechain.py).

The newest KEEP epochs are kept; a witness of an epoch older than all of them (its start below the
oldest kept start) cannot be judged and falls back to the batch-by-batch check.

An epoch is marked ``clean`` when the daemon stopped with everything it had accepted committed or
announced (service/daemon.py). A start that finds the previous epoch not clean signs an *unclean
stop notice* (trust/stop.py): readings taken between the last committed one and this start may be
lost, and the consumer is told which span.
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edge_agent.errors import OutboxError

if TYPE_CHECKING:
    from edge_agent.outbox.store import Outbox

KEEP = 1000  # epochs remembered (one per daemon start)
EPOCH_BYTES = 16

SCHEMA = """
CREATE TABLE IF NOT EXISTS epochs (
    id INTEGER PRIMARY KEY,
    epoch BLOB NOT NULL UNIQUE,
    start INTEGER NOT NULL,
    boot TEXT NOT NULL,
    started_ns INTEGER NOT NULL,
    clean INTEGER NOT NULL
)
"""


@dataclass(frozen=True, slots=True)
class Epoch:
    id: int
    epoch: bytes
    start: int  # the chain head when it began: it signed from start + 1
    boot: str
    started_ns: int
    clean: bool  # the daemon of that epoch stopped with nothing accepted left unannounced


def _epoch(r: tuple[int, bytes, int, str, int, int]) -> Epoch:
    return Epoch(int(r[0]), bytes(r[1]), int(r[2]), str(r[3]), int(r[4]), bool(r[5]))


_COLS = "id, epoch, start, boot, started_ns, clean"


def latest(conn: sqlite3.Connection) -> Epoch | None:
    r = conn.execute(f"SELECT {_COLS} FROM epochs ORDER BY id DESC LIMIT 1").fetchone()
    return None if r is None else _epoch(r)


def begin(conn: sqlite3.Connection, head_seq: int, boot: str) -> tuple[Epoch, Epoch | None]:
    """Inside a write transaction: a new epoch starting at ``head_seq``; (it, the previous one)."""
    prev = latest(conn)
    e = os.urandom(EPOCH_BYTES)
    now = time.time_ns()
    cur = conn.execute("INSERT INTO epochs (epoch, start, boot, started_ns, clean)"
                       " VALUES (?, ?, ?, ?, 0)", (e, head_seq, boot, now))  # fmt: skip
    assert cur.lastrowid is not None
    conn.execute("DELETE FROM epochs WHERE id <= ?", (cur.lastrowid - KEEP,))
    return Epoch(cur.lastrowid, e, head_seq, boot, now, False), prev


def mark_clean(conn: sqlite3.Connection, epoch_id: int) -> None:
    conn.execute("UPDATE epochs SET clean = 1 WHERE id = ?", (epoch_id,))


def vouches(
    conn: sqlite3.Connection, current: Epoch, head_seq: int, epoch: bytes, start: int, seq: int
) -> bool | None:
    """Does this state know the witnessed ``seq`` of ``epoch`` (which began at ``start``)?
    True: it continues the witnessed chain; False: it was restored from an older copy; None: the
    epoch is older than every epoch kept, so this cannot tell."""
    if epoch == current.epoch:
        return seq <= head_seq
    r = conn.execute(f"SELECT {_COLS} FROM epochs WHERE epoch = ?", (epoch,)).fetchone()
    if r is None:
        oldest = conn.execute("SELECT min(start) FROM epochs").fetchone()[0]
        return None if oldest is not None and start < int(oldest) else False
    e = _epoch(r)
    after = conn.execute("SELECT start FROM epochs WHERE id > ? ORDER BY id LIMIT 1",
                         (e.id,)).fetchone()  # fmt: skip
    last = head_seq if after is None else int(after[0])  # what this state knows it reached
    return seq <= last


# -- on an open outbox -------------------------------------------------------------------------


def start(box: Outbox, boot_id: str) -> Epoch | None:
    """Record durably that a daemon run begins (before anything is published) as ``box.epoch``;
    returns the previous run (None at the first start, or an outbox from before epochs)."""
    box.epoch, prev = box.transact("epoch", lambda conn, head: begin(conn, head, boot_id))
    return prev


def stopped_clean(box: Outbox) -> None:
    """The run stops with everything it accepted committed or announced."""
    ep = box.epoch
    if ep is not None:
        box.transact("epoch", lambda conn, head: mark_clean(conn, ep.id))


def box_vouches(box: Outbox, epoch: bytes, start: int, seq: int) -> bool | None:
    """Whether the state in ``box`` continues a witnessed (epoch, start, seq); see ``vouches``."""
    cur = box.epoch
    if cur is None:
        raise OutboxError(f"{box.path}: no epoch begun")
    return box.transact("read", lambda conn, head: vouches(conn, cur, head, epoch, start, seq))
