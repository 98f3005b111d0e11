"""Batcher: closing rules, timer, alarms, flush, group commit, retry — on a real outbox through
``SigningWriter``, plus the hand-over contract itself with a recording ``commit`` callable."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.config.model import BatchConfig
from edge_agent.errors import ContractError, OutboxError
from edge_agent.outbox.records import BatchLike
from edge_agent.outbox.store import Outbox
from edge_agent.outbox.writer import SigningWriter
from edge_agent.pipeline.batcher import Batcher
from edge_agent.pipeline.loss import Loss
from edge_agent.readings import Reading
from edge_agent.retry import RetryPolicy
from edge_agent.trust.batch import BatchSigner
from simulators.synthetic import synthetic_readings
from tests.outbox.chains import verify_all


def _wait(pred: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.005)
    return False


MakeBatcher = Callable[[BatchConfig], Batcher]


@pytest.fixture
def make_batcher(outbox: Outbox, signer: BatchSigner) -> Iterator[MakeBatcher]:
    made: list[Batcher] = []

    def make(cfg: BatchConfig) -> Batcher:
        made.append(Batcher(cfg, SigningWriter(signer, outbox)))
        return made[-1]

    yield make
    for b in made:
        b.close()


@pytest.mark.timeout(20)
def test_closes_at_max_readings_and_keeps_the_rest_open(
    make_batcher: MakeBatcher, outbox: Outbox
) -> None:
    b = make_batcher(BatchConfig(max_readings=10, max_ms=60_000))
    b.add_many(synthetic_readings(25))
    assert _wait(lambda: b.committed_batches == 2)
    time.sleep(0.1)
    assert b.committed_readings == 20  # the 5 left wait for more or the timer
    assert [p.n_readings for p in outbox.pending(0, 10)] == [10, 10]


@pytest.mark.timeout(20)
@pytest.mark.parametrize("as_list", [False, True], ids=["iterator", "list"])
def test_timer_closes_a_partial_batch_after_max_ms(
    make_batcher: MakeBatcher, outbox: Outbox, as_list: bool
) -> None:
    """An iterator is added reading by reading; a list that closes no batch is taken in one
    step (the fast path): either way the batch it opens starts its max_ms timer."""
    b = make_batcher(BatchConfig(max_readings=1000, max_ms=150))
    t0 = time.monotonic()
    readings = synthetic_readings(3)
    b.add_many(list(readings) if as_list else readings)
    assert _wait(lambda: b.committed_batches == 1, 3.0)
    took = time.monotonic() - t0
    assert 0.14 <= took < 1.5, took
    assert [p.n_readings for p in outbox.pending(0, 10)] == [3]


@pytest.mark.timeout(20)
def test_alarm_reading_closes_the_batch_at_once(make_batcher: MakeBatcher, outbox: Outbox) -> None:
    b = make_batcher(BatchConfig(max_readings=1000, max_ms=60_000))
    t0 = time.monotonic()
    for r in synthetic_readings(4, alarm_every=4):
        b.add(r)
    assert _wait(lambda: b.committed_batches == 1, 3.0)
    assert time.monotonic() - t0 < 1.0
    (stored,) = outbox.pending(0, 10)
    assert stored.alarm and stored.n_readings == 4


@pytest.mark.timeout(20)
def test_flush_commits_everything_and_chain_verifies(
    make_batcher: MakeBatcher, outbox: Outbox, key: Ed25519PrivateKey
) -> None:
    b = make_batcher(BatchConfig(max_readings=10, max_ms=60_000))
    calls: list[int] = []
    outbox.add_listener(lambda: calls.append(outbox.head.seq))
    b.add_many(synthetic_readings(1003, alarm_every=97))
    assert b.flush(10.0)
    assert b.committed_readings == 1003
    stored = outbox.pending(0, 1000)
    assert sum(s.n_readings for s in stored) == 1003
    assert sum(s.alarm for s in stored) == 1003 // 97
    # group commit: far fewer transactions (one listener call each) than batches
    assert len(calls) < len(stored) / 2, (len(calls), len(stored))
    report = verify_all(key, [s.cose for s in stored])
    assert report.ok and report.readings == 1003 and report.batches == len(stored)


@pytest.mark.timeout(20)
def test_refused_commit_is_retried_with_the_same_readings(
    tmp_path: Path, signer: BatchSigner, key: Ed25519PrivateKey
) -> None:
    class Flaky(Outbox):
        failures = 2

        def append(self, batches: Sequence[BatchLike]) -> list[BatchLike]:
            if self.failures:
                self.failures -= 1
                raise OutboxError("injected: disk full")
            return super().append(batches)

    box = Flaky(tmp_path / "o.db", cap_bytes=1 << 20)
    with box:
        b = Batcher(
            BatchConfig(max_readings=5, max_ms=60_000), SigningWriter(signer, box),
            retry=RetryPolicy(initial_s=0.01, max_s=0.05),
        )  # fmt: skip
        try:
            b.add_many(synthetic_readings(12))
            assert b.flush(5.0)
        finally:
            b.close()
        assert box.failures == 0
        stored = box.pending(0, 100)
        assert [s.n_readings for s in stored] == [5, 5, 2]
        assert verify_all(key, [s.cose for s in stored]).ok


@pytest.mark.timeout(20)
def test_add_after_close_is_refused(outbox: Outbox, signer: BatchSigner) -> None:
    b = Batcher(BatchConfig(max_readings=5, max_ms=100), SigningWriter(signer, outbox))
    b.add_many(synthetic_readings(3))
    b.close()
    assert b.committed_readings == 3  # close flushed
    with pytest.raises(OutboxError, match="closed"):
        b.add(next(synthetic_readings(1)))


def test_bad_config_is_refused(outbox: Outbox, signer: BatchSigner) -> None:
    with pytest.raises(ContractError, match="max_readings"):
        Batcher(dataclasses.replace(BatchConfig(), max_readings=0), SigningWriter(signer, outbox))


# -- the hand-over contract, with a recording commit (pure logic: no signing, no disk) -------------


class Recorder:
    """A ``commit`` that records every group it is handed; ``fail`` first calls raise OutboxError;
    while ``gate`` is clear, calls block (so closed batches pile up behind the first one)."""

    def __init__(self, fail: int = 0) -> None:
        self.fail = fail
        self.gate = threading.Event()
        self.gate.set()
        self.calls: list[list[list[Reading]]] = []
        self.committed: list[list[Reading]] = []

    def __call__(self, group: list[list[Reading]]) -> None:
        self.calls.append([list(b) for b in group])
        self.gate.wait(10)
        if self.fail:
            self.fail -= 1
            raise OutboxError("injected: refused")
        self.committed.extend(group)


@pytest.mark.timeout(20)
def test_refused_group_is_handed_over_again_unchanged() -> None:
    rec = Recorder(fail=3)
    b = Batcher(
        BatchConfig(max_readings=4, max_ms=60_000), rec,
        retry=RetryPolicy(initial_s=0.01, max_s=0.02),
    )  # fmt: skip
    try:
        readings = list(synthetic_readings(4))
        b.add_many(readings)
        assert b.flush(5.0)
    finally:
        b.close()
    assert len(rec.calls) == 4
    assert all(call == [readings] for call in rec.calls)
    assert rec.committed == [readings]
    assert (b.committed_readings, b.committed_batches) == (4, 1)


@pytest.mark.timeout(20)
def test_waiting_batches_are_handed_over_as_one_group_of_at_most_max_group() -> None:
    rec = Recorder()
    rec.gate.clear()
    b = Batcher(BatchConfig(max_readings=2, max_ms=60_000), rec, max_group=3)
    try:
        readings = list(synthetic_readings(16))
        b.add_many(readings[:2])  # the worker takes this one and blocks in commit
        assert _wait(lambda: len(rec.calls) == 1)
        b.add_many(readings[2:])  # 7 more closed batches wait meanwhile
        rec.gate.set()
        assert b.flush(5.0)
    finally:
        b.close()
    assert [len(c) for c in rec.calls] == [1, 3, 3, 1]
    assert [r for batch in rec.committed for r in batch] == readings
    assert b.committed_batches == 8


@pytest.mark.timeout(20)
def test_a_group_stops_at_max_group_readings_but_takes_one_batch_at_least() -> None:
    rec = Recorder()
    rec.gate.clear()
    b = Batcher(BatchConfig(max_readings=3, max_ms=60_000), rec, max_group=32,
                max_group_readings=7)  # fmt: skip
    try:
        readings = list(synthetic_readings(24))
        b.add_many(readings[:3])  # the worker takes this one and blocks in commit
        assert _wait(lambda: len(rec.calls) == 1)
        b.add_many(readings[3:])  # 7 more closed batches of 3 wait meanwhile
        rec.gate.set()
        assert b.flush(5.0)
        assert b.backlog == 0
    finally:
        b.close()
    # 3 batches (9 readings) reach the bound of 7: a group takes batches while under it
    assert [len(c) for c in rec.calls] == [1, 3, 3, 1]
    assert [r for batch in rec.committed for r in batch] == readings
    b2 = Batcher(BatchConfig(max_readings=10, max_ms=60_000), rec, max_group_readings=4)
    try:
        b2.add_many(list(synthetic_readings(10)))  # one batch larger than the bound: still goes
        assert b2.flush(5.0)
    finally:
        b2.close()
    assert [len(c) for c in rec.calls][-1] == 1


@pytest.mark.timeout(20)
def test_close_gives_up_on_a_commit_that_keeps_failing_and_counts_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rec = Recorder(fail=1_000_000)
    b = Batcher(
        BatchConfig(max_readings=3, max_ms=60_000), rec,
        retry=RetryPolicy(initial_s=0.01, max_s=0.02),
    )  # fmt: skip
    b.add_many(synthetic_readings(7))
    assert not b.flush(0.3)
    t0 = time.monotonic()
    b.close(timeout=0.2)
    assert time.monotonic() - t0 < 2.0
    assert not b.alive
    assert (b.committed_readings, b.committed_batches) == (0, 0)
    assert rec.committed == [] and len(rec.calls) >= 2
    assert "batcher_close_uncommitted readings=7" in caplog.text
    with pytest.raises(OutboxError, match="closed"):
        b.add(next(synthetic_readings(1)))


# -- bounded backlog, loss notices, a dead worker ---------------------------------------------


@pytest.mark.timeout(20)
def test_backlog_is_bounded_and_what_is_given_up_is_announced() -> None:
    rec = Recorder()
    rec.gate.clear()  # the outbox is stuck: nothing commits
    losses: list[Loss] = []
    b = Batcher(BatchConfig(max_readings=10, max_ms=60_000), rec, max_backlog=50,
                on_loss=losses.append)
    try:
        readings = list(synthetic_readings(210, alarm_every=37))
        b.add_many(readings[:10])  # taken by the worker, stuck in commit
        assert _wait(lambda: len(rec.calls) == 1)
        for r in readings[10:]:
            b.add(r)
            assert b.backlog <= 50 + 10  # closed batches + the open one
        assert b.readings_lost >= 100
        rec.gate.set()
        assert b.flush(5.0)
    finally:
        b.close()
    committed = [r for batch in rec.committed for r in batch]
    lost = sum(x.readings for x in losses)
    assert lost == b.readings_lost and len(committed) + lost == 210
    # the oldest non-alarm batches went; every alarm reading was kept
    assert all(x.alarms == 0 for x in losses)
    assert sum(r.alarm for r in committed) == sum(r.alarm for r in readings)
    kept = {id(r) for r in committed}
    gone = [r for r in readings if id(r) not in kept]
    assert sorted({r.device for r in gone}) == sorted({d for x in losses for d in x.devices})
    assert min(x.t_first_ns for x in losses) == min(r.ts_ns for r in gone)
    assert max(x.t_last_ns for x in losses) == max(r.ts_ns for r in gone)


@pytest.mark.timeout(30)
def test_loss_notice_is_signed_into_the_chain_and_every_reading_is_accounted(
    tmp_path: Path, signer: BatchSigner, key: Ed25519PrivateKey
) -> None:
    class Stuck(Outbox):
        stuck = threading.Event()

        def append(self, batches: Sequence[BatchLike]) -> list[BatchLike]:
            if self.stuck.is_set():
                raise OutboxError("injected: I/O error")
            return super().append(batches)

    with Stuck(tmp_path / "o.db", cap_bytes=1 << 20) as box:
        writer = SigningWriter(signer, box)
        b = Batcher(BatchConfig(max_readings=20, max_ms=60_000), writer, max_backlog=100,
                    on_loss=writer.commit_loss, retry=RetryPolicy(initial_s=0.01, max_s=0.05))
        try:
            b.add_many(synthetic_readings(100))
            assert b.flush(5.0)
            Stuck.stuck.set()
            b.add_many(synthetic_readings(500, start=100))
            assert _wait(lambda: b.failing_s is not None) and b.readings_lost >= 380
            Stuck.stuck.clear()
            assert b.flush(5.0) and b.failing_s is None
        finally:
            b.close(timeout=2.0)
        stored = box.pending(0, 1000)
    assert [s.kind for s in stored].count("loss") >= 1
    report = verify_all(key, [s.cose for s in stored])
    assert report.ok and report.loss_notices >= 1
    assert report.readings + report.readings_lost == 600


@pytest.mark.timeout(20)
def test_add_refuses_once_the_worker_died(caplog: pytest.LogCaptureFixture) -> None:
    def broken(group: list[list[Reading]]) -> None:
        raise RuntimeError("a bug in commit")

    b = Batcher(BatchConfig(max_readings=2, max_ms=60_000), broken)
    b.add_many(synthetic_readings(2))
    assert _wait(lambda: not b.alive)
    with pytest.raises(OutboxError, match="worker died"):
        b.add(next(synthetic_readings(1)))
    assert "batcher_worker_died" in caplog.text
    b.close(timeout=0.1)


@pytest.mark.timeout(20)
def test_add_many_of_lists_cuts_batches_as_adding_one_by_one(
    make_batcher: MakeBatcher, outbox: Outbox
) -> None:
    """The poller hands over each poll's readings as a list (the one-extend path): batches
    still close at max_readings and at an alarm, in order, whatever the chunks."""
    readings = list(synthetic_readings(103, alarm_every=17))
    expected: list[int] = []
    n = 0
    for r in readings:  # the rule, reading by reading
        n += 1
        if r.alarm or n == 10:
            expected.append(n)
            n = 0
    b = make_batcher(BatchConfig(max_readings=10, max_ms=60_000))
    for i in range(0, len(readings), 3):
        b.add_many(readings[i : i + 3])
    b.add_many([])
    assert _wait(lambda: b.committed_batches == len(expected))
    assert b.flush(5.0)
    stored = outbox.pending(0, 100)
    assert [s.n_readings for s in stored] == [*expected, n]
    assert [s.alarm for s in stored[:-1]] == [k < 10 for k in expected]
