"""Whether the outbox's commits are failing, and since when (what the watchdog and `status` see).

Each kind of write (append, ack, hold) is tracked apart: acks succeeding must not hide appends
that keep failing. A failure streak starts at its first failure and ends at the next success of
the same kind; the first failure is logged at error, the recovery at info, nothing in between.
"""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger(__name__)


class CommitHealth:
    def __init__(self, where: str) -> None:
        self.where = where
        self._lock = threading.Lock()
        self._failing: dict[str, tuple[float, str]] = {}  # kind -> (since monotonic, last error)
        self.failures = 0  # failed commits since open

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

    def state(self) -> tuple[str | None, float | None]:
        """(last error of the longest failing kind, seconds it has failed) or (None, None)."""
        with self._lock:
            if not self._failing:
                return None, None
            since, err = min(self._failing.values())
        return err, round(time.monotonic() - since, 1)
