"""Anti-rollback: a gateway never signs a seq it has already published, even after its state
directory was restored from an older copy.

The witness (trust/witness.py) is the gateway's own signed, retained statement of the highest seq
that may have left it, that batch's digest, and the daemon run (*epoch*, outbox/epochs.py) that
signed it. At every connect, before publishing anything, the uplink hands the retained witness to
``ChainGuard.reconcile``:

* the local state knows the witnessed epoch and knows it reached at least the witnessed seq: it
  continues the witnessed chain, nothing to do. This never depends on which batches the outbox
  still holds (drops may have removed the witnessed one and the one after it);
* the epoch is unknown here, or the seq lies past what this state knows of it: the state was
  rolled back. Every waiting batch was signed by the restored state (those from before the copy
  are re-signed too: whether the earlier state published them cannot be told apart), so the whole
  waiting tail is rewritten in ONE durable outbox transaction: a signed *resume notice* whose prev
  is the witnessed digest, at witness seq + 1 (or, when the restored state had already signed past
  the witness, at its head + 1: seqs are never reused, even unpublished ones), then every waiting
  batch re-signed in order with its seq shifted by the same amount (its readings, boot id and
  clocks unchanged; gap and resume notices get the seqs they name shifted too). Seqs a waiting gap
  notice names below the lowest waiting batch may have been published by the earlier state: the
  resume notice covers them instead (its ``from`` goes down to them) and the moved gap notice no
  longer names those at or below the witness — one left naming nothing is left out, the seqs
  after it closing up. When the disk cannot hold the rewrite (the WAL holds all of it until it
  commits), the oldest waiting batches are dropped first, with a signed gap notice. The
  outbox head — and so the signer, which always signs from that head — ends above the witness;
* a witness from an older gateway (no epoch), or of an epoch older than every one remembered, is
  judged batch by batch (``continues``) as before.

``ChainGuard.witness()`` signs the current head, with this run's epoch, as the next witness.
"""

from __future__ import annotations

import hashlib
import logging
import time
from bisect import bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

from edge_agent.errors import OutboxError, VerifyError
from edge_agent.outbox import epochs
from edge_agent.outbox.records import BatchLike, Head, StoredBatch
from edge_agent.outbox.rewrite import Rewrite
from edge_agent.outbox.schema import is_full
from edge_agent.outbox.store import Outbox
from edge_agent.trust.batch import (
    BatchPayload,
    BatchSigner,
    ChainHead,
    ResumeNotice,
    decode_payload,
)
from edge_agent.trust.cose import parse1
from edge_agent.trust.ed25519 import PrivateKey
from edge_agent.trust.gap import normalize
from edge_agent.trust.witness import Witness, read_witness, sign_witness

log = logging.getLogger(__name__)

REASON = "state_rollback"
REWRITE_TRIES = 4  # a full disk: each try carries at most half what the one before could


@dataclass(frozen=True, slots=True)
class Rechained:
    witness_seq: int
    notice_seq: int  # witness_seq + 1, or local_head + 1 when that is higher
    from_seq: int  # first local seq moved (lowest waiting batch, or old head + 1)
    local_head: int  # head before the move
    resigned: int  # waiting batches re-signed after the notice
    head: int  # head after the move


def _payload(b: StoredBatch) -> BatchPayload:
    return decode_payload(parse1(b.cose)[2])


def continues(outbox: Outbox, seq: int, digest: bytes) -> bool:
    """Whether the local chain continues the witnessed (seq, digest)."""
    head = outbox.head
    if seq == 0:
        return True
    if seq > head.seq:
        return False
    if seq == head.seq:
        return head.prev == digest
    for b in outbox.pending(after_seq=seq - 1, limit=1):
        if b.seq == seq:
            return hashlib.sha256(b.cose).digest() == digest
        if b.seq == seq + 1:
            return _payload(b).prev == digest
    return True  # acknowledged (or dropped) here long ago: nothing local contradicts it


class _Move:
    """Where the waiting seqs go: those above ``base`` shift by ``shift``, closing up over the
    notices left out (``dropped``, old seqs, ascending). ``witness``: what the earlier state may
    have published."""

    def __init__(self, base: int, shift: int, witness: int, dropped: list[int]) -> None:
        self.base, self.shift, self.witness, self.dropped = base, shift, witness, dropped

    def __call__(self, s: int) -> int:
        return s + self.shift - bisect_right(self.dropped, s) if s > self.base else s

    def payload(self, p: BatchPayload) -> BatchPayload:
        if p.gap is not None:
            # named seqs at or below the witness may have been published by the earlier state:
            # the resume notice covers them instead; those up to base keep their seqs (nobody
            # published them), those above it move with the batches
            spans = [(max(a, self.witness + 1), min(b, self.base)) for a, b in p.gap.ranges]
            spans = [(a, b) for a, b in spans if a <= b]
            spans += [(self(max(a, self.base + 1)), self(b)) for a, b in p.gap.ranges
                      if b > self.base]  # fmt: skip
            p = replace(p, gap=replace(p.gap, ranges=normalize(spans)))
        if p.resume is not None:
            r = p.resume
            p = replace(p, resume=replace(r, from_seq=self(r.from_seq),
                                          local_head=self(r.local_head)))  # fmt: skip
        return p


def _below(notices: list[StoredBatch], base: int, witness: int) -> tuple[int | None, list[int]]:
    """The lowest seq the waiting gap notices name at or below ``base`` (None: none), and the
    notices left naming nothing (every seq they name is at or below both base and the witness):
    they are left out of the moved chain."""
    low: int | None = None
    empty: list[int] = []
    for n in notices:
        gap = _payload(n).gap
        if gap is None:
            continue
        if gap.first_seq <= base:
            low = gap.first_seq if low is None else min(low, gap.first_seq)
        if gap.last_seq <= min(base, witness):
            empty.append(n.seq)
    return low, empty


def rechain(
    outbox: Outbox,
    signer: BatchSigner,
    witness_seq: int,
    witness_digest: bytes,
    *,
    reason: str = REASON,
    clock_synced: bool = True,
) -> Rechained:
    """Move the chain past the witness: resume notice + every waiting batch re-signed (see the
    module doc), atomically and durably. OutboxError when the store cannot."""
    info: dict[str, int] = {}

    def rewrite(
        head: Head, depth: int, waiting: Iterator[StoredBatch], notices: list[StoredBatch]
    ) -> Iterator[BatchLike]:
        first = next(waiting, None)
        # below base everything was acknowledged or dropped (drops may reach past the witness)
        base = head.seq if first is None else first.seq - 1
        low, empty = _below(notices, base, witness_seq)
        after = max(witness_seq, head.seq)  # the notice's seq - 1: never a seq used before
        move = _Move(base, after + 1 - base, witness_seq, empty)
        frm = base + 1 if low is None else min(low, base + 1)
        resigned = depth - len(empty)
        notice = signer.sign_resume(
            ChainHead(after, witness_digest),
            ResumeNotice(from_seq=frm, local_head=head.seq, resigned=resigned, reason=reason),
            created_ns=time.time_ns(), clock_synced=clock_synced,
        )  # fmt: skip
        info.update(from_seq=frm, local_head=head.seq, resigned=resigned, notice=notice.seq)
        yield notice
        chain = BatchSigner.next_head(notice)
        if first is None:
            return
        for b in _prepend(first, waiting):
            if b.seq in empty:
                continue
            while chain.seq + 1 < move(b.seq):  # a hole (dropped batches): the same after
                chain = ChainHead(chain.seq + 1, chain.prev)
            new = signer.resign(move.payload(_payload(b)), chain)
            chain = BatchSigner.next_head(new)
            yield new

    head = _rewrite_within_the_disk(outbox, rewrite)
    done = Rechained(witness_seq, info["notice"], info["from_seq"], info["local_head"],
                     info["resigned"], head.seq)  # fmt: skip
    log.warning(
        "chain_rollback witness_seq=%d local_head=%d from_seq=%d resigned=%d notice_seq=%d"
        " head=%d", done.witness_seq, done.local_head, done.from_seq, done.resigned,
        done.notice_seq, done.head,
    )  # fmt: skip
    return done


def _rewrite_within_the_disk(outbox: Outbox, rewrite: Rewrite) -> Head:
    """``rewrite_pending``; when the disk cannot hold the rewrite (the WAL holds all of it until
    it commits), the oldest waiting batches go first, with a signed gap notice, and it is tried
    again with less (the room an estimate: the pages a rewrite touches depend on the layout)."""
    for attempt in range(REWRITE_TRIES):
        room, waiting = outbox.rewrite_room() >> attempt, outbox.stats().bytes
        if waiting > room:
            gaps = outbox.drop_oldest(waiting - room)
            log.warning("chain_rollback_drop bytes=%d room=%d gap_seq=%s", waiting - room, room,
                        gaps[0].seq if gaps else "-")  # fmt: skip
        try:
            return outbox.rewrite_pending(rewrite)
        except VerifyError as exc:  # a waiting batch we cannot decode: refuse, keep everything
            raise OutboxError(f"{outbox.path}: cannot re-sign a waiting batch: {exc}") from exc
        except OutboxError as exc:
            if attempt == REWRITE_TRIES - 1 or not is_full(exc.__cause__ or exc):
                raise
    raise OutboxError(f"{outbox.path}: rewrite failed")  # not reached


def _prepend(first: StoredBatch, rest: Iterator[StoredBatch]) -> Iterator[StoredBatch]:
    yield first
    yield from rest


class ChainGuard:
    """What the uplink needs for anti-rollback: the next witness to announce, and the check of the
    retained witness at connect (with the move past it when the state was rolled back)."""

    def __init__(
        self,
        outbox: Outbox,
        signer: BatchSigner,
        key: PrivateKey,
        *,
        clock_synced: Callable[[], bool] = lambda: True,
    ) -> None:
        self.outbox = outbox
        self.signer = signer
        self._key = key
        self._public = key.public_key()
        self._clock_synced = clock_synced
        self.rechained: list[Rechained] = []
        self.announced = 0  # highest seq this process announced
        self._missing_logged = False
        if outbox.epoch is None:  # the daemon begins it at start; a guard alone begins one
            epochs.start(outbox, signer.boot_id)

    def witness(self) -> tuple[int, bytes]:
        """(seq, signed witness) of the current outbox head, with this run's epoch."""
        h = self.outbox.head
        ep = self.outbox.epoch
        assert ep is not None
        self.announced = max(self.announced, h.seq)
        w = Witness(self.signer.gateway_id, h.seq, h.prev, time.time_ns(), ep.epoch,
                    min(ep.start, h.seq))  # fmt: skip
        return h.seq, sign_witness(self._key, w)

    def _continues(self, w: Witness) -> bool:
        if w.epoch:
            known = epochs.box_vouches(self.outbox, w.epoch, w.epoch_start, w.seq)
            if known is not None:
                return known
            log.info("chain_witness epoch=%s older than every epoch kept: checked batch by batch",
                     w.epoch.hex())  # fmt: skip
        return continues(self.outbox, w.seq, w.digest)  # an older gateway's witness

    def reconcile(self, retained: bytes | None) -> int:
        """Check the retained witness (None or empty: there is none) against the local chain and
        move past it when needed. Returns the witnessed seq (0 when there is no usable witness)."""
        if not retained:
            if self.announced and not self._missing_logged:
                # once: the broker lost its retained messages, or refuses us the read
                self._missing_logged = True
                log.warning("chain_witness state=missing announced=%d (broker without persistence"
                            " of retained messages, or an ACL refusing the read)", self.announced)
            else:
                log.info("chain_witness state=none gateway=%s", self.signer.gateway_id)
            return 0
        try:
            w = read_witness(retained, self._public, self.signer.gateway_id)
        except VerifyError as exc:
            log.warning("chain_witness state=rejected err=%s", exc)
            return 0
        if self._continues(w):
            log.info("chain_witness state=ok seq=%d head=%d", w.seq, self.outbox.head.seq)
            return w.seq
        self.rechained.append(
            rechain(self.outbox, self.signer, w.seq, w.digest, clock_synced=self._clock_synced())
        )
        return w.seq
