"""Consumer-side verification of a stream of signed batches (any number of gateways).

``ChainVerifier.feed(cose_bytes)`` checks the COSE_Sign1 signature against the configured public
keys, decodes the payload and files the batch into its gateway's chain. Batches may arrive in any
order: each gateway keeps a reorder window of up to ``window`` batches waiting for the next
expected seq. When the window overflows (or at ``summary()``) the missing seqs are skipped and
recorded as a gap; a signed gap notice covering them makes the gap *explained*, otherwise it stays
*unexplained*. Every link N-1 -> N whose both ends were seen is checked: ``prev`` of N must be
SHA-256 of the complete COSE bytes of N-1 (32 zero bytes for seq 1). The link after a gap cannot be
checked (the dropped batch is gone) and is counted in ``links_unchecked``.

Same gateway + seq with identical bytes counts as a duplicate (QoS 1 redelivery); with different
bytes it is a conflict: two validly signed, different batches for one seq. A batch that arrives
although a gap notice announced it as dropped *contradicts* that notice (a notice must name only
batches that never reached the broker); checked against the batches still remembered. Loss notices
(readings given up before they were signed) are links like any other and are counted.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge_agent.errors import ContractError, VerifyError
from edge_agent.trust.batch import GENESIS_PREV, BatchPayload, decode_payload
from edge_agent.trust.cose import verify1

log = logging.getLogger(__name__)

MAX_PROBLEMS = 100  # problem messages kept for the report (counters keep counting)


@dataclass(frozen=True, slots=True)
class Accepted:
    """A batch that passed signature and payload checks."""

    kid: bytes
    payload: BatchPayload
    digest: bytes  # SHA-256 of the COSE bytes


@dataclass(frozen=True, slots=True)
class VerifyReport:
    batches: int  # distinct, validly signed batches (data + gap notices)
    gap_notices: int
    resumes: int  # resume notices: a gateway moved past seqs its restored state had published
    readings: int  # readings in distinct data batches
    readings_dropped: int  # as announced by gap notices
    duplicates: int  # same gateway+seq, identical bytes
    conflicts: int  # same gateway+seq, different bytes
    gaps_explained: int  # missing seqs covered by a gap notice
    gaps_unexplained: int  # missing seqs no gap notice covers
    forged: int  # bad signature, unknown kid, not COSE_Sign1, malformed payload
    broken_chain: int  # links whose prev does not match the previous batch's digest
    links_checked: int
    links_unchecked: int  # first batch seen of a chain, or right after a gap
    late: int  # arrived after its seq was given up as missing (filled in, link re-checked)
    gateways: tuple[str, ...]
    unexplained: tuple[tuple[str, int, int], ...]  # (gateway, first seq, last seq)
    problems: tuple[str, ...]
    contradicted: int = 0  # batches that arrived although a gap notice announced them dropped
    loss_notices: int = 0
    readings_lost: int = 0  # readings given up before signing, as announced by loss notices

    @property
    def ok(self) -> bool:
        return not (
            self.forged or self.broken_chain or self.gaps_unexplained or self.conflicts
            or self.contradicted
        )


@dataclass(slots=True)
class _Entry:
    seq: int
    digest: bytes
    prev: bytes


@dataclass(slots=True)
class _Chain:
    gateway: str
    next_seq: int | None = None  # next seq to link; None until the start is known
    last_digest: bytes | None = None  # digest of seq next_seq-1 if it was seen
    start: int = 0  # lowest seq linked so far
    pending: dict[int, _Entry] = field(default_factory=dict)
    recent: OrderedDict[int, _Entry] = field(default_factory=OrderedDict)  # linked, bounded
    missing: list[tuple[int, int]] = field(default_factory=list)  # given-up seq ranges
    claims: list[tuple[int, int]] = field(default_factory=list)  # gap notice ranges
    dropped: list[tuple[int, int]] = field(default_factory=list)  # gap notices only: never sent


def _uncovered(a: int, b: int, claims: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sub-ranges of a..b (inclusive) not covered by any claim range."""
    holes: list[tuple[int, int]] = []
    cur = a
    for x, y in sorted(claims):
        if y < cur:
            continue
        if x > b:
            break
        if x > cur:
            holes.append((cur, x - 1))
        cur = max(cur, y + 1)
        if cur > b:
            break
    if cur <= b:
        holes.append((cur, b))
    return holes


class ChainVerifier:
    def __init__(
        self,
        public_keys: Mapping[bytes, Ed25519PublicKey],
        *,
        bindings: Mapping[str, Iterable[bytes]] | None = None,
        window: int = 256,
        memory: int = 4096,
    ) -> None:
        """``public_keys`` maps kid -> key. ``bindings`` (gateway id -> its kids) restricts which
        key may sign for which gateway, both ways; gateways not bound are pinned to the first kid
        they are seen with. ``window``: out-of-order batches held per gateway before the missing
        ones are given up as a gap. ``memory``: linked batches remembered per gateway for
        duplicate / conflict detection and late fill-in."""
        if window < 1 or memory < window:
            raise ContractError("need window >= 1 and memory >= window")
        self._keys = dict(public_keys)
        self._gw_kids: dict[str, set[bytes]] = {}
        self._kid_owner: dict[bytes, str] = {}
        for gw, kids in (bindings or {}).items():
            for kid in kids:
                self._gw_kids.setdefault(gw, set()).add(kid)
                self._kid_owner[kid] = gw
        self._window = window
        self._memory = memory
        self._chains: dict[str, _Chain] = {}
        self._c: dict[str, int] = dict.fromkeys(
            (
                "batches", "gap_notices", "resumes", "readings", "readings_dropped", "duplicates",
                "conflicts", "forged", "broken_chain", "links_checked", "links_unchecked", "late",
                "contradicted", "loss_notices", "readings_lost",
            ),
            0,
        )  # fmt: skip
        self._problems: list[str] = []

    # -- feeding ---------------------------------------------------------------------------------

    def feed(self, msg: bytes, *, source: str = "") -> Accepted | None:
        """Check one batch. Returns it when the signature and payload are good (even if it is a
        duplicate or breaks the chain: those are counted), None when it is forged/malformed."""
        try:
            kid, payload = verify1(msg, self._keys)
            p = decode_payload(payload)
        except VerifyError as exc:
            self._c["forged"] += 1
            self._problem(f"forged{' ' + source if source else ''}: {exc}")
            return None
        wrong = self._wrong_signer(kid, p.gateway_id)
        if wrong:
            self._c["forged"] += 1
            self._problem(f"forged{' ' + source if source else ''}: {wrong}")
            return None
        digest = hashlib.sha256(msg).digest()
        chain = self._chains.get(p.gateway_id)
        if chain is None:
            chain = self._chains[p.gateway_id] = _Chain(p.gateway_id)
        if self._known(chain, p.seq, digest):
            return Accepted(kid, p, digest)
        entry = _Entry(p.seq, digest, p.prev)
        self._contradictions(chain, p)
        if p.gap is not None:
            chain.claims.append((p.gap.first_seq, p.gap.last_seq))
            chain.dropped.append((p.gap.first_seq, p.gap.last_seq))
        if p.resume is not None and p.resume.from_seq < p.seq:
            chain.claims.append((p.resume.from_seq, p.seq - 1))
        if chain.next_seq is not None and p.seq < chain.next_seq:
            if not self._late(chain, entry):
                return Accepted(kid, p, digest)  # too old to tell apart from a duplicate
        else:
            chain.pending[p.seq] = entry
            if chain.next_seq is None and p.seq == 1:
                chain.next_seq = chain.start = 1  # genesis seen: the chain starts here for sure
            self._advance(chain)
            while len(chain.pending) > self._window:
                self._skip(chain)
        self._c["batches"] += 1
        if p.gap is not None:
            self._c["gap_notices"] += 1
            self._c["readings_dropped"] += p.gap.readings
        elif p.resume is not None:
            self._c["resumes"] += 1
            r = p.resume
            log.warning(
                "chain_resume gateway=%s seq=%d from_seq=%d local_head=%d resigned=%d reason=%s",
                p.gateway_id, p.seq, r.from_seq, r.local_head, r.resigned, r.reason,
            )  # fmt: skip
        elif p.loss is not None:
            self._c["loss_notices"] += 1
            self._c["readings_lost"] += p.loss.readings
        else:
            self._c["readings"] += len(p.readings)
        return Accepted(kid, p, digest)

    def _contradictions(self, chain: _Chain, p: BatchPayload) -> None:
        """A new gap notice naming batches seen, or a new batch some notice named as dropped."""
        if p.gap is not None:
            a, b = p.gap.first_seq, p.gap.last_seq
            seen = sorted(s for s in (*chain.recent, *chain.pending) if a <= s <= b)
        elif any(a <= p.seq <= b for a, b in chain.dropped):
            seen = [p.seq]
        else:
            return
        if seen:
            self._c["contradicted"] += len(seen)
            self._problem(f"contradicted gateway={chain.gateway} seqs={seen[:10]}: announced as "
                          "dropped by a gap notice, yet they arrived")

    def _wrong_signer(self, kid: bytes, gateway: str) -> str:
        """Why ``kid`` may not sign for ``gateway`` ("" when it may). Pins unbound gateways."""
        owner = self._kid_owner.get(kid)
        if owner is not None and owner != gateway:
            return f"kid {kid.hex()} belongs to gateway {owner}, batch claims gateway {gateway}"
        kids = self._gw_kids.get(gateway)
        if kids is None:
            self._gw_kids[gateway] = {kid}  # trust on first use
            return ""
        if kid not in kids:
            known = ",".join(sorted(k.hex() for k in kids))
            return f"gateway {gateway} signs with kid {known}, not {kid.hex()}"
        return ""

    def _known(self, chain: _Chain, seq: int, digest: bytes) -> bool:
        """True (and counted) when this seq was already seen for the gateway."""
        seen = chain.pending.get(seq) or chain.recent.get(seq)
        if seen is None:
            return False
        if seen.digest == digest:
            self._c["duplicates"] += 1
        else:
            self._c["conflicts"] += 1
            self._problem(f"conflict gateway={chain.gateway} seq={seq}: two different batches")
        return True

    def _link(self, chain: _Chain, prev_digest: bytes | None, entry: _Entry) -> None:
        if prev_digest is None:
            if entry.seq == 1:
                prev_digest = GENESIS_PREV
            else:
                self._c["links_unchecked"] += 1
                return
        self._c["links_checked"] += 1
        if entry.prev != prev_digest:
            self._c["broken_chain"] += 1
            self._problem(
                f"broken_chain gateway={chain.gateway} seq={entry.seq}: prev does not match "
                f"SHA-256 of seq {entry.seq - 1}"
            )

    def _remember(self, chain: _Chain, entry: _Entry) -> None:
        chain.recent[entry.seq] = entry
        while len(chain.recent) > self._memory:
            chain.recent.popitem(last=False)

    def _advance(self, chain: _Chain) -> None:
        while chain.next_seq is not None and chain.pending:
            seq = chain.next_seq
            if seq not in chain.pending:
                # a gap notice already announced this seq as dropped: no need to wait for it
                end = max((b for a, b in chain.claims if a <= seq <= b), default=None)
                if end is None:
                    return
                chain.missing.append((seq, end))
                chain.next_seq = end + 1
                chain.last_digest = None
                continue
            entry = chain.pending.pop(seq)
            self._link(chain, chain.last_digest, entry)
            self._remember(chain, entry)
            chain.last_digest = entry.digest
            chain.next_seq += 1

    def _skip(self, chain: _Chain) -> None:
        """Give up waiting: jump to the lowest pending seq, recording what was skipped."""
        low = min(chain.pending)
        if chain.next_seq is not None and low > chain.next_seq:
            chain.missing.append((chain.next_seq, low - 1))
            log.warning(
                "chain_gap gateway=%s first=%d last=%d", chain.gateway, chain.next_seq, low - 1
            )
        if chain.next_seq is None:
            chain.start = low
        chain.next_seq = low
        chain.last_digest = None
        self._advance(chain)

    def _late(self, chain: _Chain, entry: _Entry) -> bool:
        """A batch for a seq already given up as missing, or before the first one linked: fill it
        in and check both its links. False when it is simply too old to check (not remembered)."""
        self._c["late"] += 1
        seq = entry.seq
        for i, (a, b) in enumerate(chain.missing):
            if a <= seq <= b:
                parts = [(x, y) for x, y in ((a, seq - 1), (seq + 1, b)) if x <= y]
                chain.missing[i : i + 1] = parts
                break
        else:
            if seq >= chain.start:
                self._problem(f"late gateway={chain.gateway} seq={seq}: too old to check")
                return False
            if seq + 1 < chain.start:  # the seqs between it and the old start are missing
                chain.missing.append((seq + 1, chain.start - 1))
            chain.start = seq
        before = chain.recent.get(seq - 1)
        self._link(chain, before.digest if before else None, entry)
        after = chain.recent.get(seq + 1)
        if after is not None:
            # that link was counted unchecked when ``after`` was linked behind a gap / as the start
            self._c["links_unchecked"] -= 1
            self._link(chain, entry.digest, after)
        self._remember(chain, entry)
        return True

    def feed_many(self, msgs: Iterable[bytes]) -> None:
        for m in msgs:
            self.feed(m)

    # -- results ---------------------------------------------------------------------------------

    def _problem(self, text: str) -> None:
        log.warning("verify_problem %s", text)
        if len(self._problems) < MAX_PROBLEMS:
            self._problems.append(text)

    def flush(self) -> None:
        """Link everything still waiting in the reorder windows (the stream has ended)."""
        for chain in self._chains.values():
            while chain.pending:
                self._skip(chain)

    def summary(self) -> VerifyReport:
        """Flush the reorder windows and report. Feeding may continue afterwards."""
        self.flush()
        explained = unexplained = 0
        ranges: list[tuple[str, int, int]] = []
        for chain in self._chains.values():
            for a, b in chain.missing:
                holes = _uncovered(a, b, chain.claims)
                n_holes = sum(y - x + 1 for x, y in holes)
                unexplained += n_holes
                explained += (b - a + 1) - n_holes
                ranges.extend((chain.gateway, x, y) for x, y in holes)
        problems = list(self._problems)
        for gw, a, b in ranges:
            if len(problems) < MAX_PROBLEMS:
                problems.append(f"unexplained_gap gateway={gw} seqs={a}..{b}")
        return VerifyReport(
            **self._c,
            gaps_explained=explained,
            gaps_unexplained=unexplained,
            gateways=tuple(sorted(self._chains)),
            unexplained=tuple(ranges),
            problems=tuple(problems),
        )
