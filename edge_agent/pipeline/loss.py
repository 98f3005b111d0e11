"""Readings the pipeline could not keep before they were ever signed, summed up for a notice.

The batcher's backlog is bounded; when the commit path stays blocked long enough to fill it, the
oldest closed batches (non-alarm first) are given up. They are never silently dropped: ``Tally``
sums them up (how many readings, how many were alarms, the time span, which devices) and the
committer signs that as a *loss notice* into the chain (``trust.batch``, kind "loss") before the
next batch, so a consumer sees exactly what is missing and why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from edge_agent.readings import Reading

REASON_BACKLOG_FULL = "backlog_full"


@dataclass(frozen=True, slots=True)
class Loss:
    readings: int
    alarms: int  # alarm readings among them
    t_first_ns: int  # wall time of the earliest reading given up
    t_last_ns: int  # wall time of the latest
    devices: tuple[str, ...]  # every device among them, sorted (bounded by the config)
    reason: str


class Tally:
    """Accumulates given-up readings until a notice for them commits. Not thread-safe: the
    batcher uses it under its own lock."""

    def __init__(self) -> None:
        self.readings = 0
        self.alarms = 0
        self.t_first = 0
        self.t_last = 0
        self.devices: set[str] = set()
        self.total = 0  # readings given up since start (announced or not)

    def __bool__(self) -> bool:
        return self.readings > 0

    def add(self, readings: Sequence[Reading]) -> None:
        if not readings:
            return
        first = min(r.ts_ns for r in readings)
        last = max(r.ts_ns for r in readings)
        self.t_first = first if not self.readings else min(self.t_first, first)
        self.t_last = last if not self.readings else max(self.t_last, last)
        self.readings += len(readings)
        self.total += len(readings)
        self.alarms += sum(1 for r in readings if r.alarm)
        self.devices.update(r.device for r in readings)

    def merge(self, loss: Loss) -> None:
        """Put a notice that could not commit back (its readings stay unannounced)."""
        self.t_first = loss.t_first_ns if not self.readings else min(self.t_first, loss.t_first_ns)
        self.t_last = loss.t_last_ns if not self.readings else max(self.t_last, loss.t_last_ns)
        self.readings += loss.readings
        self.alarms += loss.alarms
        self.devices.update(loss.devices)

    def take(self, reason: str = REASON_BACKLOG_FULL) -> Loss:
        loss = Loss(self.readings, self.alarms, self.t_first, self.t_last,
                    tuple(sorted(self.devices)), reason)
        self.readings = self.alarms = self.t_first = self.t_last = 0
        self.devices = set()
        return loss
