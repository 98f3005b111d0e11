"""Batcher on a real outbox: closing rules, timer, alarms, flush, group commit, retry."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.config.model import BatchConfig
from edge_agent.errors import OutboxError
from edge_agent.outbox.records import BatchLike
from edge_agent.outbox.store import Outbox
from edge_agent.pipeline.batcher import Batcher
from edge_agent.pipeline.synthetic import synthetic_readings
from edge_agent.retry import RetryPolicy
from edge_agent.trust.batch import BatchSigner
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
        made.append(Batcher(cfg, signer, outbox))
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
def test_timer_closes_a_partial_batch_after_max_ms(
    make_batcher: MakeBatcher, outbox: Outbox
) -> None:
    b = make_batcher(BatchConfig(max_readings=1000, max_ms=150))
    t0 = time.monotonic()
    b.add_many(synthetic_readings(3))
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
            BatchConfig(max_readings=5, max_ms=60_000), signer, box,
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
    b = Batcher(BatchConfig(max_readings=5, max_ms=100), signer, outbox)
    b.add_many(synthetic_readings(3))
    b.close()
    assert b.committed_readings == 3  # close flushed
    with pytest.raises(OutboxError, match="closed"):
        b.add(next(synthetic_readings(1)))


def test_bad_config_is_refused(outbox: Outbox, signer: BatchSigner) -> None:
    with pytest.raises(ValueError, match="max_readings"):
        Batcher(dataclasses.replace(BatchConfig(), max_readings=0), signer, outbox)
