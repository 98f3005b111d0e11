"""What a device's refusals taught the poller: its learned address map.

A device answering ILLEGAL DATA ADDRESS (exception 2) to a merged read lacks a register the read
touches: one the profile declares (a smaller firmware variant) or an unmapped one in a gap the
planner read through. The poller narrows the refused read *once*, by bisection
(``planner.split``, ``device_poll``), and keeps two kinds of facts here:

* an **unreadable cluster**: a point (or the points sharing its registers) refused when read
  alone. It is left out of every plan; its readings are quality ``unreadable`` (reason ``exc:2``)
  without a transaction; it is tried again on the quarantine schedule (the one retry policy,
  ``health.PROBE_POLICY``, and never more than ``health.PROBE_SHARE`` of the line), one cluster
  per probe.
* a **break**: a refused read whose two halves were both accepted. The device refuses to read
  across that place (an unmapped register in the gap, a block boundary). Only such *proven*
  breaks are kept: a cut made on the way down to an unreadable cluster is not, so once the
  unreadable points are out of the plan the readable ones merge back into the fewest requests
  the device accepts. An unreadable cluster is itself a break (``plan_breaks``): a read through
  its registers is refused for certain. Should a merged read still be refused (an unmapped
  register in a gap no refusal has crossed yet), its narrowing proves that break: every refusal
  teaches a new fact, so learning ends after a few of them.

With every constraint learnt true and each one needed, the planner's optimum over the readable
points under ``plan_breaks`` is the fewest requests the device accepts (for the profile's
``max_gap`` and the protocol's caps).

Everything is forgotten -- the profile's own plan is tried again -- when the device shows that it
may have changed: an unreadable cluster reads again (new firmware), the device comes back from
quarantine (it may have been rebooted, updated or replaced), or the configuration is reloaded (a
new Poller learns from scratch).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

from edge_agent.poll.health import PROBE_SHARE, probe_backoff
from edge_agent.profiles.model import ModbusPoint, Table
from edge_agent.profiles.planner import ReadRequest
from edge_agent.retry import Backoff

log = logging.getLogger(__name__)

Break = tuple[Table, int]
NO_BREAKS: frozenset[Break] = frozenset()  # one object for every device that learnt none


@dataclass(slots=True)
class Lesson:
    """What the narrowing of one refused read found."""

    unreadable: list[tuple[ModbusPoint, ...]] = field(default_factory=list)
    breaks: list[Break] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.unreadable or self.breaks)


@dataclass(slots=True)
class AddressMap:
    """One device's learned facts. Times are ``time.monotonic()`` seconds."""

    device: str
    rng: random.Random | None = None  # the backoff's jitter (None: the shared generator's)
    # frozen, replaced when it grows: most devices never learn one, and share NO_BREAKS (an
    # empty set is 216 bytes a device)
    breaks: frozenset[Break] = NO_BREAKS
    # (table, first register) -> the points of an unreadable cluster
    clusters: dict[tuple[Table, int], tuple[ModbusPoint, ...]] = field(default_factory=dict)
    unreadable: frozenset[str] = frozenset()  # names of the points of every cluster
    next_probe_at: float = 0.0
    probes: int = 0  # tries of an unreadable cluster
    forgotten: int = 0  # times the map was dropped (the device may have changed)
    _turn: int = 0
    # walks health.PROBE_POLICY: when to try the unreadable points again; made when first
    # needed (most devices never learn anything)
    _backoff: Backoff | None = None

    @property
    def backoff(self) -> Backoff:
        b = self._backoff
        if b is None:
            b = self._backoff = probe_backoff(self.rng)
        return b

    def learn(self, lesson: Lesson, now: float) -> bool:
        """Add ``lesson``; True when it taught anything new (the plan must change)."""
        new_breaks = [b for b in lesson.breaks if b not in self.breaks]
        new_clusters = [pts for pts in lesson.unreadable
                        if not {p.name for p in pts} <= self.unreadable]
        if not new_breaks and not new_clusters:
            return False
        if new_breaks:
            self.breaks = self.breaks.union(new_breaks)
        for pts in new_clusters:
            key = (pts[0].table, min(p.address for p in pts))
            merged = {p.name: p for p in (*self.clusters.get(key, ()), *pts)}
            self.clusters[key] = tuple(merged.values())
        self.unreadable = frozenset(p.name for pts in self.clusters.values() for p in pts)
        if new_clusters:
            if self.next_probe_at <= now:  # the first unreadable cluster: start the schedule
                self.next_probe_at = now + self.backoff.next_delay()
            names = ",".join(sorted(p.name for pts in new_clusters for p in pts))
            log.warning("points_unreadable device=%s points=%s reason=exc:2 action=not_polled "
                        "retry=quarantine_schedule", self.device, names)
        if new_breaks:
            log.info("read_split device=%s breaks=%s", self.device,
                     ",".join(f"{t.value}:{a}" for t, a in sorted(new_breaks)))
        return True

    @property
    def plan_breaks(self) -> AbstractSet[Break]:
        """The proven breaks and the first register of every unreadable cluster."""
        return self.breaks | self.clusters.keys() if self.clusters else self.breaks

    def probe_due(self, now: float) -> bool:
        return bool(self.clusters) and now >= self.next_probe_at

    def probe_request(self) -> ReadRequest:
        """The next unreadable cluster to try (round robin), as one read."""
        keys = sorted(self.clusters)
        self._turn %= len(keys)
        key = keys[self._turn]
        self._turn += 1
        return cluster_request(self.clusters[key])

    def requests(self, point: str | None = None) -> list[ReadRequest]:
        """Every unreadable cluster (or the one holding ``point``) as one read each."""
        return [cluster_request(pts) for _, pts in sorted(self.clusters.items())
                if point is None or any(p.name == point for p in pts)]

    def probed(self, now: float, cost_s: float) -> None:
        """An unreadable cluster was tried and still refused (or not answered)."""
        self.probes += 1
        self.next_probe_at = now + max(self.backoff.next_delay(), cost_s / PROBE_SHARE)

    def forget(self, why: str) -> bool:
        """Drop everything learnt; True when there was anything."""
        if not self.breaks and not self.clusters:
            return False
        log.info("address_map_forgotten device=%s why=%s unreadable=%d breaks=%d", self.device,
                 why, len(self.unreadable), len(self.breaks))
        self.breaks = NO_BREAKS
        self.clusters.clear()
        self.unreadable = frozenset()
        if self._backoff is not None:
            self._backoff.reset()
        self.next_probe_at = 0.0
        self.forgotten += 1
        return True


def cluster_request(points: Iterable[ModbusPoint]) -> ReadRequest:
    """One read of ``points`` (which share registers), in the planner's point order."""
    pts = sorted(points, key=lambda p: (p.address, -p.count, p.name))
    start = pts[0].address
    return ReadRequest(pts[0].table, start, max(p.end for p in pts) - start, tuple(pts))
