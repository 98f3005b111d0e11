"""Sign-and-append: the glue between the batcher's closed groups, the signer and the store.

``SigningWriter`` is what the daemon hands to ``pipeline.batcher.Batcher`` as its ``commit``
callable: it signs a group of closed batches as one chain starting at the outbox's head and
appends them in one transaction (group commit: one fsync for all). The store raising
``OutboxError`` (disk full, I/O error) propagates, which the batcher takes as "retry the same
readings with backoff"; on retry the group is re-signed from the then-current head. ``HeadMoved``
(a rechain moved the head between signing and appending) is not a failure: the group is signed
again at once from the new head.

``make_gap_signer`` bridges the store's drops to ``BatchSigner.sign_gap`` so the store can
append a signed gap notice when the cap forces it to drop batches. ``SigningWriter.commit_loss``
is the batcher's ``on_loss``: it signs a loss notice for readings given up before signing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from edge_agent.errors import HeadMoved
from edge_agent.outbox.records import GapSigner
from edge_agent.outbox.runs import DropPlan
from edge_agent.outbox.store import Outbox
from edge_agent.pipeline.loss import Loss
from edge_agent.readings import Reading
from edge_agent.trust.batch import BatchSigner, ChainHead, SignedBatch
from edge_agent.trust.loss import UNCLEAN_STOP, LossNotice

GAP_REASON = "outbox_full"
HEAD_MOVED_TRIES = 3  # a rechain moves the head once per connect: a third move is a bug

log = logging.getLogger(__name__)


def make_gap_signer(
    signer: BatchSigner,
    *,
    reason: str = GAP_REASON,
    clock_synced: Callable[[], bool] = lambda: True,
) -> GapSigner:
    """Bridge the outbox's drops to ``BatchSigner.sign_gap``; ``clock_synced()`` tells whether
    the wall clock can be trusted at signing time (platform.clock knows)."""

    def sign(head_seq: int, head_prev: bytes, drop: DropPlan) -> SignedBatch:
        return signer.sign_gap(
            ChainHead(head_seq, head_prev),
            ranges=drop.ranges,
            readings=drop.readings,
            unsigned=drop.unsigned,
            t_first_ns=drop.t_first_ns,
            t_last_ns=drop.t_last_ns,
            reason=reason,
            created_ns=time.time_ns(),
            clock_synced=clock_synced(),
        )

    return sign


class SigningWriter:
    """Callable ``(group of closed batches) -> None``: sign them as one chain, append them in one
    transaction. Call it from one thread only (the batcher's worker): the chain head is read
    from the store, so two concurrent writers would sign the same seq twice."""

    def __init__(self, signer: BatchSigner, outbox: Outbox) -> None:
        self.signer = signer
        self.outbox = outbox

    def __call__(self, group: Sequence[Sequence[Reading]]) -> None:
        now = time.time_ns()

        def sign(head: ChainHead) -> list[SignedBatch]:
            signed: list[SignedBatch] = []
            for readings in group:
                b = self.signer.sign_readings(
                    head, readings, created_ns=now, clock_synced=readings[-1].clock_synced
                )
                signed.append(b)
                head = BatchSigner.next_head(b)
            return signed

        self._append(sign)

    def _append(self, sign: Callable[[ChainHead], list[SignedBatch]]) -> None:
        """Sign from the current head and append; when a rechain moved the head in between
        (HeadMoved, nothing committed), sign the same content again from the new head -- an
        expected event after every move past a witness, not a failure to back off from."""
        for attempt in range(HEAD_MOVED_TRIES):
            h = self.outbox.head
            try:
                self.outbox.append(sign(ChainHead(h.seq, h.prev)))
                return
            except HeadMoved:
                if attempt == HEAD_MOVED_TRIES - 1:
                    raise
                log.info("batch_resigned reason=head_moved from_seq=%d to_seq=%d", h.seq + 1,
                         self.outbox.head.seq + 1)  # fmt: skip

    def commit_loss(self, loss: Loss, *, clock_synced: bool = True) -> None:
        """Sign a loss notice for readings the batcher gave up and append it (OutboxError: not
        committed, the batcher keeps the tally and tries again)."""
        notice = LossNotice(loss.readings, loss.alarms, loss.t_first_ns, loss.t_last_ns,
                            loss.devices, loss.reason)
        self._append(lambda head: [self.signer.sign_loss(
            head, notice, created_ns=time.time_ns(), clock_synced=clock_synced
        )])  # fmt: skip

    def commit_unclean_stop(
        self, since_ns: int, devices: Sequence[str], *, clock_synced: bool = True
    ) -> SignedBatch:
        """The unclean-stop notice (trust/loss.py): the previous run ended without its clean
        stop; what it held in memory since ``since_ns`` (its last commit) is gone, uncounted."""
        h = self.outbox.head
        now = time.time_ns()
        notice = LossNotice(0, 0, min(since_ns, now), now, tuple(sorted(devices)), UNCLEAN_STOP)
        b = self.signer.sign_loss(ChainHead(h.seq, h.prev), notice, created_ns=now,
                                  clock_synced=clock_synced)  # fmt: skip
        self.outbox.append([b])
        return b
