"""Whether the outbox's commits are failing, and since when (what the watchdog and `status` see).

Each kind of write (append, ack, hold) is tracked apart: acks succeeding must not hide appends
that keep failing. A failure streak starts at its first failure and ends at the next success of
the same kind; the first failure is logged at error, the recovery at info, nothing in between.

A commit that never returns (a frozen filesystem, a disk that stopped answering: the writer
sleeps in the kernel, no error ever comes) is a failure too: the store marks every write
transaction in flight (``begin``/``end``), and one in flight for more than ``HUNG_AFTER_S`` counts
as failing since it began (logged once at error, ``outbox_commit_hung``; ``outbox_commit_unhung``
when it returns at last). ``state`` answers from memory, never waiting for the disk.
"""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger(__name__)

HUNG_AFTER_S = 5.0  # a write transaction in flight for longer is reported as hanging


class CommitHealth:
    def __init__(self, where: str) -> None:
        self.where = where
        self._lock = threading.Lock()
        self._failing: dict[str, tuple[float, str]] = {}  # kind -> (since monotonic, last error)
        self.failures = 0  # failed commits since open
        self._inflight: tuple[str, float] | None = None  # (kind, since monotonic)
        self._hung_logged = False

    def failed(self, kind: str, error: str) -> None:
        with self._lock:
            self.failures += 1
            since = self._failing.get(kind, (time.monotonic(), ""))[0]
            first = kind not in self._failing
            self._failing[kind] = (since, error)
        if first:
            log.error("outbox_commit_failing kind=%s path=%s err=%s", kind, self.where, error)

    def ok(self, kind: str) -> None:
        if kind not in self._failing:  # the common case: no lock
            return
        with self._lock:
            got = self._failing.pop(kind, None)
        if got is not None:
            log.info("outbox_commit_recovered kind=%s after_s=%.1f", kind,
                     time.monotonic() - got[0])

    def begin(self, kind: str) -> None:
        """A write transaction of ``kind`` starts (under the store's write lock: one at a time)."""
        self._inflight = (kind, time.monotonic())

    def end(self) -> None:
        got, self._inflight = self._inflight, None
        if self._hung_logged and got is not None:
            self._hung_logged = False
            log.warning("outbox_commit_unhung kind=%s path=%s after_s=%.1f", got[0], self.where,
                        time.monotonic() - got[1])  # fmt: skip

    def hung(self) -> tuple[str, float] | None:
        """(kind, seconds) of a write transaction in flight for more than HUNG_AFTER_S."""
        got = self._inflight
        if got is None:
            return None
        took = time.monotonic() - got[1]
        if took <= HUNG_AFTER_S:
            return None
        if not self._hung_logged:
            self._hung_logged = True
            log.error("outbox_commit_hung kind=%s path=%s after_s=%.1f (the filesystem does not"
                      " answer: frozen or failing?)", got[0], self.where, took)  # fmt: skip
        return got[0], took

    def state(self) -> tuple[str | None, float | None]:
        """(last error of the longest failing kind — or of the hanging commit —, seconds it has
        failed) or (None, None)."""
        now = time.monotonic()
        streaks = []
        hung = self.hung()
        if hung is not None:
            kind, took = hung
            streaks.append((now - took, f"{self.where}: {kind} commit not done after {took:.0f} s"
                            " (the filesystem does not answer: frozen or failing?)"))
        with self._lock:
            streaks += self._failing.values()
        if not streaks:
            return None, None
        since, err = min(streaks)
        return err, round(now - since, 1)
