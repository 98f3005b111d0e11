"""Process-level tuning (edge_agent.platform.runtime): what settle() freezes, that a reload's
settle() still collects what the last freeze held, and that batches in flight no longer run the
collector."""

from __future__ import annotations

import gc
import logging
import weakref
from collections.abc import Iterator

import pytest

from edge_agent.platform import runtime


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    """The test process' objects go back to the collector, and its thresholds, after each
    test."""
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def _cycle() -> weakref.ref[Node]:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


def test_settle_freezes_what_is_alive_and_collects_garbage_first() -> None:
    gc.unfreeze()
    dead = _cycle()  # unreachable already: the collection before the freeze takes it
    kept = Node()
    s = runtime.settle()
    assert dead() is None
    assert s.collected >= 2
    assert s.frozen == gc.get_freeze_count() > 0
    assert s.thresholds == gc.get_threshold() and s.thresholds[0] == runtime.GEN0_THRESHOLD
    assert gc.is_tracked(kept)
    # frozen: a full collection no longer looks at it (it is in no generation's list)
    assert all(kept is not o for o in gc.get_objects())


def test_a_second_settle_collects_cycles_the_first_froze() -> None:
    """The reload path: the replaced poller's objects were frozen alive; once dropped, the next
    settle() must still collect their cycles (unfreeze first), not keep them forever."""
    a, b = Node(), Node()
    a.other, b.other = b, a
    ref = weakref.ref(a)
    runtime.settle()
    del a, b
    gc.collect()
    assert ref() is not None  # frozen: invisible to an ordinary collection
    runtime.settle()
    assert ref() is None


def _collections_while_batching() -> int:
    """Young-generation passes while batches of 1,000 tracked objects come and go (the max
    load's readings in flight)."""
    runs: list[int] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            runs.append(info["generation"])

    gc.callbacks.append(count)
    try:
        for _ in range(200):
            batch = [Node() for _ in range(1000)]
            del batch
    finally:
        gc.callbacks.remove(count)
    return len(runs)


def test_batches_in_flight_no_longer_run_the_collector() -> None:
    gc.set_threshold(700, 10, 10)
    assert _collections_while_batching() >= 100  # CPython 3.11's default: once a batch or more
    runtime.settle()
    assert _collections_while_batching() == 0


def test_the_log_line(caplog: pytest.LogCaptureFixture) -> None:
    s = runtime.settle()
    with caplog.at_level(logging.INFO, logger="edge_agent"):
        runtime.log_settled(s, "started")
    assert [r.getMessage() for r in caplog.records] == [
        f"runtime_tuned when=started gc_frozen={s.frozen} gc_collected={s.collected} "
        f"gc_threshold={runtime.GEN0_THRESHOLD},10,10"]
