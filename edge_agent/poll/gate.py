"""``Gate``: asyncio's Semaphore (and Lock, with one slot) in two slots, for a thousand devices.

``asyncio.Lock`` / ``Semaphore`` keep an instance dict and their loop (~90 bytes each, one per
device and one per bus of the district). ``Gate`` has the same first-come first-served semantics
as CPython 3.11.7's ``asyncio.Semaphore`` -- a released slot is handed to the first waiter that is
not cancelled, never taken by a newcomer meanwhile; a waiter cancelled after it was handed the
slot passes it on -- and holds its waiters' list only while someone waits.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

from edge_agent.errors import ContractError


class Gate:
    """At most ``slots`` holders at once; ``async with gate:`` holds one."""

    __slots__ = ("_free", "_waiters")

    def __init__(self, slots: int = 1) -> None:
        if slots < 0:
            raise ContractError("a Gate's slots must be >= 0")
        self._free = slots
        self._waiters: list[asyncio.Future[None]] | None = None  # only while someone waits

    def __repr__(self) -> str:
        waiting = len(self._waiters) if self._waiters else 0
        return f"<Gate free={self._free} waiting={waiting}>"

    def locked(self) -> bool:
        """True when ``acquire`` would wait (no slot free, or others wait for one)."""
        w = self._waiters
        return self._free == 0 or (w is not None and any(not f.cancelled() for f in w))

    async def acquire(self) -> bool:
        w = self._waiters
        if self._free > 0 and (w is None or all(f.cancelled() for f in w)):
            self._free -= 1
            return True
        if w is None:
            w = self._waiters = []
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        w.append(fut)
        try:
            try:
                await fut
            finally:
                w.remove(fut)
                if not w and self._waiters is w:
                    self._waiters = None
        except asyncio.CancelledError:
            if not fut.cancelled():  # handed the slot, then cancelled: pass it on
                self._free += 1
                self._wake_next()
            raise
        if self._free > 0:
            self._wake_next()
        return True

    def release(self) -> None:
        self._free += 1
        self._wake_next()

    def _wake_next(self) -> None:
        """Hand a free slot to the first waiter not done yet."""
        for fut in self._waiters or ():
            if not fut.done():
                self._free -= 1
                fut.set_result(None)
                return

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.release()
