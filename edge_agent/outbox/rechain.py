"""Anti-rollback: a gateway never signs a seq it has already published, even after its state
directory was restored from an older copy.

The witness (trust/witness.py) is the gateway's own signed, retained statement of the highest seq
that may have left it and that batch's digest. At every connect, before publishing anything, the
uplink hands the retained witness to ``ChainGuard.reconcile``:

* the local chain *continues* the witnessed one (the witnessed seq is at or below the head and the
  local batch there, or the prev of the one after it, has the witnessed digest; or it was
  acknowledged here long ago): nothing to do;
* otherwise the state was rolled back. Every waiting batch was signed by the restored state
  (those from before the copy are re-signed too: whether the earlier state published them cannot be
  told apart), so the whole waiting tail is rewritten in ONE durable outbox transaction: a signed
  *resume notice* whose prev is the witnessed digest, at witness seq + 1 (or, when the restored
  state had already signed past the witness, at its head + 1: seqs are never reused, even
  unpublished ones), then every waiting batch re-signed in order with its seq shifted by the same
  amount (its readings, boot id and clocks unchanged; gap and resume notices get the seqs they
  name shifted too). The outbox head — and so the signer, which always signs from that head —
  ends above the witness.

``ChainGuard.witness()`` signs the current head as the next witness to announce.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

from edge_agent.errors import ContractError, OutboxError, VerifyError
from edge_agent.outbox.records import BatchLike, Head, StoredBatch
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


def _shifted(p: BatchPayload, base: int, shift: int) -> BatchPayload:
    def move(s: int) -> int:
        return s + shift if s > base else s

    if p.gap is not None:
        spans = [(a, min(b, base)) for a, b in p.gap.ranges if a <= base]
        spans += [(max(a, base + 1) + shift, b + shift) for a, b in p.gap.ranges if b > base]
        p = replace(p, gap=replace(p.gap, ranges=normalize(spans)))
    if p.resume is not None:
        r = p.resume
        p = replace(p, resume=replace(r, from_seq=move(r.from_seq), local_head=move(r.local_head)))
    return p


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

    def rewrite(head: Head, depth: int, waiting: Iterator[StoredBatch]) -> Iterator[BatchLike]:
        first = next(waiting, None)
        base = head.seq if first is None else first.seq - 1
        if witness_seq < base:
            raise ContractError(f"witness seq {witness_seq} below the acknowledged seq {base}")
        after = max(witness_seq, head.seq)  # the notice's seq - 1: never a seq used before
        shift = after + 1 - base
        notice = signer.sign_resume(
            ChainHead(after, witness_digest),
            ResumeNotice(from_seq=base + 1, local_head=head.seq, resigned=depth, reason=reason),
            created_ns=time.time_ns(), clock_synced=clock_synced,
        )  # fmt: skip
        info.update(from_seq=base + 1, local_head=head.seq, resigned=depth, notice=notice.seq)
        yield notice
        chain = BatchSigner.next_head(notice)
        if first is None:
            return
        expect = first.seq
        for b in _prepend(first, waiting):
            while expect < b.seq:  # a hole (dropped batches): the same hole after the move
                expect += 1
                chain = ChainHead(chain.seq + 1, chain.prev)
            new = signer.resign(_shifted(_payload(b), base, shift), chain)
            chain = BatchSigner.next_head(new)
            expect += 1
            yield new

    try:
        head = outbox.rewrite_pending(rewrite)
    except VerifyError as exc:  # a waiting batch we cannot decode: refuse, keep everything
        raise OutboxError(f"{outbox.path}: cannot re-sign a waiting batch: {exc}") from exc
    done = Rechained(witness_seq, info["notice"], info["from_seq"], info["local_head"],
                     info["resigned"], head.seq)  # fmt: skip
    log.warning(
        "chain_rollback witness_seq=%d local_head=%d from_seq=%d resigned=%d notice_seq=%d"
        " head=%d", done.witness_seq, done.local_head, done.from_seq, done.resigned,
        done.notice_seq, done.head,
    )  # fmt: skip
    return done


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

    def witness(self) -> tuple[int, bytes]:
        """(seq, signed witness) of the current outbox head."""
        h = self.outbox.head
        self.announced = max(self.announced, h.seq)
        w = Witness(self.signer.gateway_id, h.seq, h.prev, time.time_ns())
        return h.seq, sign_witness(self._key, w)

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
        if continues(self.outbox, w.seq, w.digest):
            log.info("chain_witness state=ok seq=%d head=%d", w.seq, self.outbox.head.seq)
            return w.seq
        self.rechained.append(
            rechain(self.outbox, self.signer, w.seq, w.digest, clock_synced=self._clock_synced())
        )
        return w.seq
