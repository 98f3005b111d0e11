"""Many deadlines on one asyncio timer: the poll schedulers' sleeps and the request timeouts.

asyncio keeps one ``TimerHandle`` per ``call_later`` in a heap ordered by a Python ``__lt__``; with
a thousand devices every poll pushed and cancelled two of them (the worker's sleep, the request's
timeout) into a heap of ~2,000, at ~11 Python comparisons a push. ``Timers`` keeps its deadlines
as plain lists ``[when, seq, callback, args]`` in its own heap (compared in C: ``when`` first,
then the unique ``seq``) and arms a single loop timer at the earliest one. Cancelling is O(1)
(the entry is blanked and skipped when it reaches the top); the heap is compacted when blanks
are the majority. Cancelling the earliest deadline moves the loop timer later only when the
next deadline is more than ``REARM_SLACK_S`` later (the loop wakes at most that much early).

Many objects woken at one instant (the parked schedulers of a district's buses, whose wake-ups
fall on a shared start grid) can ``join`` that instant under a key: one deadline per key calls
``fn(obj)`` for each of them, instead of a deadline, a handle and an argument tuple per object
(~260 bytes each).

``timers_for(loop)`` is the one instance of a loop, shared by every bus owner and scheduler of
that loop. Callbacks run inside the loop's timer callback, due ones in deadline order, and must
be quick and not raise (an exception is handed to the loop's exception handler).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import weakref
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

K = TypeVar("K", bound=Hashable)
_COMPACT_MIN = 256  # blanks tolerated before compacting is considered
# cancelling the earliest deadline re-arms the loop timer only when the next one is more than
# this later (see _cancelled): a loop timer ~µs early costs one early wake-up, a re-arm costs an
# asyncio TimerHandle pushed and one cancelled (~3 µs, measured), once per answered request
REARM_SLACK_S = 0.002


class Timer:
    """A scheduled callback; ``cancel()`` is idempotent and safe after it ran."""

    __slots__ = ("_entry", "_owner")

    def __init__(self, owner: Timers, entry: list[Any]) -> None:
        self._owner = owner
        self._entry = entry

    def cancel(self) -> None:
        e = self._entry
        if e[2] is not None:
            e[2] = None
            e[3] = ()
            self._owner._cancelled(e)

    @property
    def when(self) -> float:
        return float(self._entry[0])


class Timers:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._heap: list[list[Any]] = []
        self._seq = itertools.count()
        self._handle: asyncio.TimerHandle | None = None
        self._armed = math.inf  # when the loop timer fires
        self._blanks = 0  # cancelled entries still in the heap
        # joined instants: key -> [its Timer, fn, the key, obj, obj...] (see ``join``)
        self._groups: dict[Hashable, list[Any]] = {}

    def __len__(self) -> int:
        """Live (not cancelled, not yet run) deadlines."""
        return len(self._heap) - self._blanks

    def call_at(self, when: float, callback: Callable[..., object], *args: Any) -> Timer:
        """Run ``callback(*args)`` at loop time ``when`` (``loop.time()``, i.e. monotonic)."""
        entry = [when, next(self._seq), callback, args]
        heapq.heappush(self._heap, entry)
        if when < self._armed:
            self._arm(when)
        return Timer(self, entry)

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> Timer:
        return self.call_at(self._loop.time() + delay, callback, *args)

    def join(self, key: K, delay: float, fn: Callable[[Any], object], obj: object) -> K:
        """Call ``fn(obj)`` with every object joined under a key equal to ``key``, at one
        deadline: ``delay`` from now as the first of them joined it (one ``Timer`` a key, not
        one an object). Returns the key as kept (equal to ``key``: hold that one, not a copy
        each, and give it to ``leave``). ``obj`` joins a key once; ``fn`` is the first joiner's."""
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = [None, fn, key, obj]
            group[0] = self.call_later(delay, self._fire_group, key)
            return key
        group.append(obj)
        return group[2]  # type: ignore[no-any-return]

    def leave(self, key: Hashable, obj: object) -> None:
        """``obj`` is no longer woken at ``key`` (the key's deadline goes with its last one)."""
        group = self._groups.get(key)
        if group is None:
            return
        try:
            del group[group.index(obj, 3)]
        except ValueError:
            return
        if len(group) == 3:
            del self._groups[key]
            group[0].cancel()

    def _fire_group(self, key: Hashable) -> None:
        group = self._groups.pop(key, None)
        if group is None:
            return
        fn = group[1]
        for obj in group[3:]:
            try:
                fn(obj)
            except Exception as exc:  # one object's bug must not keep the others asleep
                self._loop.call_exception_handler({
                    "message": f"exception in timer callback {fn!r}", "exception": exc})

    def _cancelled(self, entry: list[Any]) -> None:
        self._blanks += 1
        heap = self._heap
        if not heap or heap[0] is not entry:
            return
        # the earliest deadline went away: never wake the loop for nothing
        while heap and heap[0][2] is None:
            heapq.heappop(heap)
            self._blanks -= 1
        if not heap:
            if self._handle is not None:
                self._handle.cancel()
                self._handle = None
            self._armed = math.inf
        elif heap[0][0] > self._armed + REARM_SLACK_S:
            self._arm(heap[0][0])
        # else the next deadline is at most REARM_SLACK_S after the loop timer: keep that
        # timer (it wakes the loop that much early at worst, and _fire re-arms) instead of
        # swapping the loop's timer handle for every answered request -- at 40k readings/s
        # most requests' timeouts are the earliest deadline and follow each other by µs

    def _arm(self, when: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._armed = when
        self._handle = self._loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._handle = None
        self._armed = math.inf
        heap = self._heap
        # what asyncio itself counts as due: within the clock's resolution
        limit = self._loop.time() + self._loop._clock_resolution  # type: ignore[attr-defined]
        while heap and heap[0][0] <= limit:
            entry = heapq.heappop(heap)
            callback, args = entry[2], entry[3]
            if callback is None:
                self._blanks -= 1
                continue
            entry[2] = None  # ran: a later cancel() is a no-op
            try:
                callback(*args)
            except Exception as exc:  # a callback bug must not stop the other deadlines
                self._loop.call_exception_handler({
                    "message": f"exception in timer callback {callback!r}", "exception": exc})
        self._compact()
        while heap and heap[0][2] is None:  # skip cancelled entries at the top
            heapq.heappop(heap)
            self._blanks -= 1
        if heap:
            self._arm(heap[0][0])

    def _compact(self) -> None:
        if self._blanks > _COMPACT_MIN and 2 * self._blanks > len(self._heap):
            self._heap = [e for e in self._heap if e[2] is not None]
            heapq.heapify(self._heap)
            self._blanks = 0

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._armed = math.inf
        self._heap.clear()
        self._blanks = 0
        self._groups.clear()


_BY_LOOP: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Timers] = (
    weakref.WeakKeyDictionary())
# the last lookup's loop (a weak reference, compared by identity) and its Timers: every
# request and every worker's sleep asks, nearly always for the one running loop
_last: tuple[weakref.ref[asyncio.AbstractEventLoop], Timers] | None = None


def timers_for(loop: asyncio.AbstractEventLoop | None = None) -> Timers:
    """The ``Timers`` of ``loop`` (default: the running loop), created on first use."""
    global _last
    loop = loop or asyncio.get_running_loop()
    last = _last
    if last is not None and last[0]() is loop:
        return last[1]
    t = _BY_LOOP.get(loop)
    if t is None:
        t = _BY_LOOP[loop] = Timers(loop)
    _last = (weakref.ref(loop), t)
    return t


def resolve(fut: asyncio.Future[None]) -> None:
    """Set ``fut`` done unless it is: the one callback a timer, a reader/writer or a waker arms
    to end an ``await fut`` (the bus owners, the scheduler's parked workers)."""
    if not fut.done():
        fut.set_result(None)
