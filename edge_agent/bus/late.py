"""Late answers on one RS-485 line: which unit may still be answering, and who answered late.

RTU has no transaction ids. A unit that answers after its request timed out puts its answer on the
wire while the master is already talking to the next unit: that neighbour's answer collides with
it (or, on the simulated line, queues behind it) and the *neighbour* gets a frame error or a
timeout for a fault that is not its own. ``LateAnswers`` is what the bus owner
(``serial_line.SerialRtuBus``) knows about this, per unit:

* **not known silent** (the default): after a timeout with no byte heard, the line is *held* --
  nobody else is addressed -- until ``window_s`` after the request, or until the late answer came
  (then the usual t3.5 of silence). The late answer is attributed to its unit and counted
  (``count``), never delivered to anyone.
* **silent**: a hold ran its whole window and heard nothing: the unit is dead (or off the line).
  Its later timeouts cost no hold, so a dead unit makes only its *first* timeout expensive and
  the line efficiency with a dead unit does not change. Its last request stays *watched*: should
  an answer to it still turn up during other traffic, it is attributed and the unit is no longer
  silent (held for next time).

* **late beyond the window**: a unit whose answer turned up after its hold ended (attributed
  during other traffic) has its lateness *learnt*: from then on the hold after its timeouts lasts
  until ``LEARN_MARGIN`` x that lateness (+ ``LEARN_SLACK_S``), at most ``LEARN_CAP`` x the
  window, so its late frames end inside its own hold instead of meeting a neighbour's
  transaction. Only its first late answer beyond the window can hit a neighbour. The hold ends
  as soon as the answer is in, so the margin costs nothing while the unit answers.

Pure bookkeeping, no I/O: the bus owner feeds it bytes and asks it when to stop holding.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from edge_agent.bus.rtu import RtuRequest, RtuResponseParser

log = logging.getLogger(__name__)

LEARN_MARGIN = 1.25  # a learnt lateness is held this many times over ...
LEARN_SLACK_S = 0.05  # ... plus this (the host's scheduling, the answer's own frame time)
LEARN_CAP = 4.0  # never more than this many late-answer windows


@dataclass(slots=True)
class _Watch:
    parser: RtuResponseParser  # of the unit's last (timed out) request, fed everything since
    sent: float


class LateAnswers:
    def __init__(self, bus: str, window_s: float) -> None:
        self.bus = bus
        self.window_s = window_s
        self.silent: set[int] = set()
        self.count: dict[int, int] = {}  # late answers attributed, per unit id
        self.last_late_s: dict[int, float] = {}  # how long after its request the last one came
        self.learnt_s: dict[int, float] = {}  # the longest lateness seen beyond the window
        self.holds = 0  # holds of the line after a timeout ...
        self.hold_s = 0.0  # ... and the line time they took
        self._watch: dict[int, _Watch] = {}

    def hold_until(self, req: RtuRequest, sent: float, parser: RtuResponseParser) -> float | None:
        """Until when to hold the line after ``req`` (sent at ``sent``) timed out; None: no hold
        (bytes came, so the answer is over once the line is quiet; or the unit is known silent)."""
        if self.window_s <= 0 or req.is_broadcast or parser.received:
            return None
        if req.unit in self.silent:
            self._watch[req.unit] = _Watch(parser, sent)
            return None
        return sent + self.hold_for(req.unit)

    def hold_for(self, unit: int) -> float:
        """How long after a request to ``unit`` that timed out the line is held: the window, or
        what its learnt lateness needs (at most ``LEARN_CAP`` windows)."""
        learnt = self.learnt_s.get(unit)
        if learnt is None:
            return self.window_s
        return min(max(self.window_s, learnt * LEARN_MARGIN + LEARN_SLACK_S),
                   LEARN_CAP * self.window_s)

    def attributed(self, unit: int, sent: float, now: float) -> None:
        """An answer to ``unit``'s timed-out request (sent at ``sent``) arrived at ``now``."""
        n = self.count[unit] = self.count.get(unit, 0) + 1
        late = self.last_late_s[unit] = now - sent
        self._watch.pop(unit, None)
        if late > self.hold_for(unit) and late > self.learnt_s.get(unit, 0.0):
            self.learnt_s[unit] = late
            log.warning("late_answer_learnt bus=%s unit=%d after_ms=%.0f hold_ms=%.0f "
                        "window_ms=%.0f (its timeouts now hold the line that long)", self.bus,
                        unit, late * 1e3, self.hold_for(unit) * 1e3, self.window_s * 1e3)
        was_silent = unit in self.silent
        self.silent.discard(unit)
        if n == 1 or was_silent:
            log.warning("late_answer bus=%s unit=%d after_ms=%.0f window_ms=%.0f action=discarded",
                        self.bus, unit, late * 1e3, self.window_s * 1e3)
        else:
            log.debug("late_answer bus=%s unit=%d after_ms=%.0f n=%d", self.bus, unit,
                      late * 1e3, n)

    def found_silent(self, unit: int, sent: float, parser: RtuResponseParser) -> None:
        """A hold heard nothing for its whole window: no more holds for ``unit``."""
        if unit not in self.silent:
            log.info("unit_silent bus=%s unit=%d window_ms=%.0f (its timeouts no longer hold "
                     "the line)", self.bus, unit, self.window_s * 1e3)
        self.silent.add(unit)
        self._watch[unit] = _Watch(parser, sent)

    def addressing(self, unit: int) -> None:
        """A new request goes to ``unit``: an answer to its older one can no longer be told from
        the new answer (the same-unit guard of the bus owner covers that case)."""
        self._watch.pop(unit, None)

    def feed(self, data: bytes, now: float) -> None:
        """Bytes seen on the line: the late answer of a watched (silent) unit among them?"""
        if not self._watch:
            return
        for unit, w in list(self._watch.items()):
            if w.parser.feed(data) is not None:
                self.attributed(unit, w.sent, now)
