"""The outbox's record types: what goes in (a signed batch), what comes out, the statistics."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from edge_agent.outbox.runs import DropPlan


class BatchLike(Protocol):
    """What the store needs of a signed batch (``edge_agent.trust.batch.SignedBatch`` fits)."""

    @property
    def seq(self) -> int: ...
    @property
    def cose(self) -> bytes: ...
    @property
    def digest(self) -> bytes: ...
    @property
    def kind(self) -> str: ...
    @property
    def n_readings(self) -> int: ...
    @property
    def alarm(self) -> bool: ...
    @property
    def t_first_ns(self) -> int: ...
    @property
    def t_last_ns(self) -> int: ...


# (head_seq, head_prev, drop) -> the drop's signed gap notice, with seq == head_seq + 1
GapSigner = Callable[[int, bytes, DropPlan], BatchLike]


@dataclass(frozen=True, slots=True)
class Head:
    seq: int
    prev: bytes


@dataclass(frozen=True, slots=True)
class StoredBatch:
    seq: int
    cose: bytes
    kind: str
    n_readings: int
    alarm: bool
    t_first_ns: int
    t_last_ns: int


@dataclass(frozen=True, slots=True)
class Stats:
    depth: int  # batches waiting for an ack
    readings: int  # readings in those batches (data batches only)
    bytes: int  # COSE bytes waiting
    oldest_age_s: float  # age of the oldest waiting batch (0 when empty)
    head_seq: int
    batches_dropped: int
    readings_dropped: int
    bytes_dropped: int
    gaps: int
    file_bytes: int  # main file + WAL on disk now
    bytes_written: int  # kernel write_bytes charged to this store since open (-1: unknown)
    readings_appended: int  # data readings appended since open
    append_commits: int = 0  # transactions since open
    ack_commits: int = 0
    # the footprint cap (see outbox.space)
    footprint_bytes: int = 0  # database + WAL + WAL index + journal + reserve file, on disk now
    used_bytes: int = 0  # what counts against the cap: live pages + WAL allowance + reserve
    cap_bytes: int = 0  # configured cap
    budget_bytes: int = 0  # the cap as the filesystem allows it now: min(cap, files + free)
    disk_free_bytes: int = -1  # free on the outbox's filesystem (-1: unknown)
    reserve_bytes: int = 0
    reserve_held: bool = False
    held_through: int = 0  # batches up to this seq may have reached the broker: never dropped
    commit_error: str | None = None  # last error of a failing commit streak
    commit_failing_s: float | None = None  # how long commits have been failing

    @property
    def written_per_reading(self) -> float:
        if self.bytes_written < 0 or not self.readings_appended:
            return 0.0
        return self.bytes_written / self.readings_appended
