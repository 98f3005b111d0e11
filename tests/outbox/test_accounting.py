"""Every loss accounted for: random appends, publishes, acks, reconnects and loss notices against a
real outbox with a tiny cap. After every step, every seq ever signed is acknowledged by the broker,
stored in the outbox, or named by a gap notice that is stored or acknowledged — and no notice ever
names a seq that was published. The readings add up too: those signed equal those acknowledged or
stored plus those the live notices name. At the end the whole delivered stream verifies with zero
unexplained seqs."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.errors import OutboxError
from edge_agent.outbox.store import Outbox
from edge_agent.outbox.writer import SigningWriter, make_gap_signer
from edge_agent.pipeline.loss import Loss
from edge_agent.trust.batch import BatchPayload, BatchSigner, decode_payload
from edge_agent.trust.cose import parse1
from tests.outbox.chains import GATEWAY, sign_chain, verifier

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
CAP = 200 * 1024  # barely above the floor: a few dozen batches fit
HOLD_AHEAD = 8

# alarm batches (kept while plain ones go) split the dropped seqs into many ranges
append_op = st.tuples(st.just("append"), st.integers(1, 4), st.integers(20, 150),
                      st.sets(st.integers(0, 2)))  # fmt: skip
ops = st.lists(
    st.one_of(
        append_op,
        append_op,
        append_op,
        st.tuples(st.just("publish"), st.integers(1, 12)),
        st.tuples(st.just("ack"), st.integers(1, 12)),
        st.tuples(st.just("reconnect")),
        st.tuples(st.just("loss"), st.integers(1, 500)),
    ),
    min_size=60,
    max_size=250,
)


def _payload(cose: bytes) -> BatchPayload:
    return decode_payload(parse1(cose)[2])


@dataclass
class World:
    box: Outbox
    writer: SigningWriter
    signed_readings: int = 0
    unsigned_readings: int = 0  # given up before signing (loss notices committed)
    last_sent: int = 0
    inflight: list[int] = field(default_factory=list)
    published: set[int] = field(default_factory=set)
    acked: dict[int, bytes] = field(default_factory=dict)  # seq -> COSE, in ack order

    def append(self, n: int, per: int, alarms: set[int]) -> None:
        batches = sign_chain(self.writer.signer, self.box, n, per, alarm_at=tuple(alarms))
        try:
            self.box.append(batches)
        except OutboxError as exc:  # only batches held for the broker left: nothing committed
            assert "outbox full" in str(exc)
            return
        self.signed_readings += n * per

    def publish(self, k: int) -> None:
        while k > 0:
            batch = next(iter(self.box.pending(self.last_sent, 1)), None)
            if batch is None:
                return
            if batch.seq > self.box.held_through:  # the mark first, then read again
                self.box.hold_through(batch.seq + HOLD_AHEAD)
                continue
            self.inflight.append(batch.seq)
            self.published.add(batch.seq)
            self.last_sent = batch.seq
            k -= 1

    def ack(self, k: int) -> None:
        done, self.inflight = self.inflight[:k], self.inflight[k:]
        stored = {b.seq: b.cose for b in self.box.pending(0, 100_000)}
        for seq in done:
            self.acked.setdefault(seq, stored[seq])
        self.box.ack(done)

    def reconnect(self) -> None:
        self.inflight.clear()
        self.last_sent = 0  # the next session sends again from the lowest waiting seq

    def loss(self, readings: int) -> None:
        try:
            self.writer.commit_loss(Loss(readings, 0, 1, 2, ("dev",), "backlog_full"))
        except OutboxError:
            return
        self.unsigned_readings += readings

    def check(self) -> None:
        stored = {b.seq: b.cose for b in self.box.pending(0, 100_000)}
        live = {**self.acked, **stored}
        named: set[int] = set()
        named_readings = unsigned = data_readings = 0
        unheld_gaps = 0
        for seq, cose in live.items():
            p = _payload(cose)
            if p.gap is not None:
                named.update(p.gap.seqs())
                named_readings += p.gap.readings
                unsigned += p.gap.unsigned
                unheld_gaps += seq in stored and seq > self.box.held_through
            elif p.loss is not None:
                unsigned += p.loss.readings
            else:
                data_readings += len(p.readings)
        head = self.box.head.seq
        missing = set(range(1, head + 1)) - live.keys() - named
        assert not missing, f"unaccounted seqs {sorted(missing)[:20]} (head {head})"
        assert not named & self.published, f"named yet published {sorted(named & self.published)}"
        assert not named & live.keys()
        assert data_readings + named_readings == self.signed_readings
        assert unsigned == self.unsigned_readings
        assert unheld_gaps <= 1  # each drop merges the unpublished notice before it


@pytest.mark.timeout(600)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=ops)
def test_every_seq_is_acknowledged_stored_or_named(steps: list[tuple[object, ...]]) -> None:
    signer = BatchSigner(KEY, GATEWAY, "boot-1")
    with tempfile.TemporaryDirectory() as d, Outbox(
        Path(d) / "o.db", cap_bytes=CAP, gap_signer=make_gap_signer(signer)
    ) as box:
        w = World(box, SigningWriter(signer, box))
        for op, *args in steps:
            getattr(w, str(op))(*args)
            w.check()
        for _ in range(10_000):  # the broker comes back: everything left drains
            w.reconnect()
            w.publish(1000)
            if not w.inflight:
                break
            w.ack(len(w.inflight))
        assert box.stats().depth == 0
        w.check()
    v = verifier(KEY)
    v.feed_many(w.acked.values())
    rep = v.summary()
    assert rep.ok, rep.problems
    assert (rep.gaps_unexplained, rep.contradicted, rep.conflicts) == (0, 0, 0)
    assert rep.readings + rep.readings_dropped == w.signed_readings
    assert rep.readings_lost == w.unsigned_readings
