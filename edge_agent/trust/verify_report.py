"""What ``ChainVerifier`` reports: a batch it accepted, and the report over everything fed."""

from __future__ import annotations

from dataclasses import dataclass

from edge_agent.trust.batch import BatchPayload
from edge_agent.trust.verify_state import MAX_EVENTS

MAX_PROBLEMS = MAX_EVENTS  # problem lines in a report (counters keep counting)
COUNTERS = (
    "batches", "gap_notices", "resumes", "readings", "readings_dropped", "duplicates",
    "conflicts", "gaps_explained", "gaps_unexplained", "forged", "broken_chain", "links_checked",
    "links_unchecked", "late", "contradicted", "loss_notices", "readings_lost",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Accepted:
    """A batch that passed signature and payload checks."""

    kid: bytes
    payload: BatchPayload
    digest: bytes  # SHA-256 of the COSE bytes
    verdict: str = "new"  # "new" | "duplicate" | "conflict"


@dataclass(frozen=True, slots=True)
class VerifyReport:
    batches: int  # distinct, validly signed batches (data + notices)
    gap_notices: int
    resumes: int  # resume notices: a gateway moved past seqs its restored state had published
    readings: int  # readings in distinct data batches
    readings_dropped: int  # as announced by gap notices
    duplicates: int  # same gateway+seq, identical bytes
    conflicts: int  # same gateway+seq, different bytes
    gaps_explained: int  # missing seqs covered by a gap or resume notice
    gaps_unexplained: int  # missing seqs no notice covers
    forged: int  # bad signature, unknown kid, not COSE_Sign1, malformed payload
    broken_chain: int  # links whose prev does not match the previous batch's digest
    links_checked: int
    links_unchecked: int  # first batch seen of a chain, or right after a gap
    late: int  # arrived after its seq was given up as missing (filled in, link re-checked)
    gateways: tuple[str, ...]
    unexplained: tuple[tuple[str, int, int], ...]  # (gateway, first seq, last seq)
    problems: tuple[str, ...]
    notices: tuple[str, ...] = ()  # resume notices, one line each (not failures)
    contradicted: int = 0  # batches that arrived although a gap notice announced them dropped
    loss_notices: int = 0
    readings_lost: int = 0  # readings given up before signing, as announced by loss notices

    @property
    def ok(self) -> bool:
        return not (
            self.forged or self.broken_chain or self.gaps_unexplained or self.conflicts
            or self.contradicted
        )
