"""Which batches to drop when the outbox is over its byte cap, grouped into runs of seqs.

Pure logic, no I/O. Victims are chosen oldest first by class: non-alarm data batches (a generous
chunk per drop, see ``drops.drop_target``, so notices stay few), then — only as far as the
budget strictly needs — alarm data batches, then (last resort) older notices, whose announcement
is then lost. A run is a maximal
set of consecutive seqs among the victims; each run gets one signed gap notice, so the planner
keeps room for one notice per run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# (seq, kind, alarm, n_readings, bytes, t_first_ns, t_last_ns) as stored in the batches table
Candidate = tuple[int, str, int, int, int, int, int]


@dataclass(frozen=True, slots=True)
class DropRun:
    seqs: tuple[int, ...]
    readings: int  # readings in the dropped data batches
    bytes: int
    t_first_ns: int
    t_last_ns: int
    alarms: int  # alarm batches among them
    notices: int = 0  # older gap notices among them (their announcement is lost)

    @property
    def first_seq(self) -> int:
        return self.seqs[0]

    @property
    def last_seq(self) -> int:
        return self.seqs[-1]


def group_runs(victims: Sequence[Candidate]) -> list[DropRun]:
    """Group victims (any order) into runs of consecutive seqs, in seq order."""
    runs: list[DropRun] = []
    current: list[Candidate] = []

    def close() -> None:
        if current:
            data = [c for c in current if c[1] == "data"]  # notices carry no readings
            runs.append(
                DropRun(
                    seqs=tuple(c[0] for c in current),
                    readings=sum(c[3] for c in data),
                    bytes=sum(c[4] for c in current),
                    t_first_ns=min(c[5] for c in current),
                    t_last_ns=max(c[6] for c in current),
                    alarms=sum(1 for c in data if c[2]),
                    notices=len(current) - len(data),
                )
            )
            current.clear()

    for c in sorted(victims, key=lambda c: c[0]):
        if current and c[0] != current[-1][0] + 1:
            close()
        current.append(c)
    close()
    return runs


def plan_drops(
    candidates: Sequence[Candidate], want: int, must: int, reserve: int
) -> tuple[list[DropRun], int]:
    """Victims freeing ``want`` bytes plus ``reserve`` per extra run from non-alarm data batches,
    oldest first. Alarm batches, then notices (gap, loss, resume: announcements), oldest first,
    are taken only while the non-alarm ones cannot free ``must`` bytes. Returns the runs and how
    far it had to go: 0 ``want`` was met, 1 every non-alarm batch was taken, 2 everything was."""
    plain = [c for c in candidates if c[1] == "data" and not c[2]]
    rest = sorted(c for c in candidates if c[1] == "data" and c[2])
    rest += sorted(c for c in candidates if c[1] != "data")
    victims: list[Candidate] = []
    freed = 0
    for c in sorted(plain):
        victims.append(c)
        freed += c[4]
        if freed >= want:
            runs = group_runs(victims)
            if freed >= want + reserve * (len(runs) - 1):
                return runs, 0
    for c in rest:
        if freed >= must + reserve * max(0, len(group_runs(victims)) - 1):
            return group_runs(victims), 1
        victims.append(c)
        freed += c[4]
    return group_runs(victims), 2
