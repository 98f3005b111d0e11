"""Process-level tuning of the running daemon: Python's garbage collector.

The collector runs a young-generation pass each time tracked allocations minus deallocations
pass 700 (CPython 3.11's default). At 40,000 readings/s the readings of the batches in flight
(``batch.max_readings`` = 1000 each, freed a few ms later when the batch is signed) keep that
count above 700 all the time: the collector ran ~75 times a second, most of it over objects that
die anyway, and promoted them to older generations whose passes walked everything else -- 4-5 %
of a core, and more in what it did to the caches (docs/benchmarks.md, "Process-level runtime
tuning": 57k-62k → 71k-80k delivered readings per CPU-s). With the young threshold at
``GEN0_THRESHOLD`` only what really accumulates triggers a pass; what may wait for one is
bounded by the threshold (that many unreachable objects in cycles at most).

``settle()`` runs once the daemon has started (config, profiles, plans, devices, imports: ~30,000
tracked objects for a 1,000-device district, kept until it stops): one full collection, then
``gc.freeze()``, which moves them to the permanent generation that no later pass scans, then the
thresholds. A reload builds a new poller: ``settle()`` again unfreezes first, so the replaced
objects' cycles are still collected, then freezes what now runs.

Not here, because they did not measurably help (same section): glibc's ``malloc_trim(0)`` after
start-up (~0.1 MiB) and ``M_ARENA_MAX``.
"""

from __future__ import annotations

import gc
import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)

GEN0_THRESHOLD = 10_000  # CPython's default is 700 (3.11), 2,000 (3.13)


@dataclass(frozen=True, slots=True)
class Settled:
    frozen: int  # objects in the permanent generation after the freeze
    collected: int  # unreachable objects found by the full collection before it
    thresholds: tuple[int, int, int]


def settle() -> Settled:
    """Collect, then freeze every object alive now (the daemon's start-up state) out of the
    collector's reach, then raise the young generation's threshold."""
    gc.unfreeze()  # a reload: what the last freeze held is collectable again
    collected = gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)
    return Settled(frozen=gc.get_freeze_count(), collected=collected,
                   thresholds=gc.get_threshold())


def log_settled(s: Settled, why: str) -> None:
    log.info("runtime_tuned when=%s gc_frozen=%d gc_collected=%d gc_threshold=%s", why, s.frozen,
             s.collected, ",".join(map(str, s.thresholds)))
