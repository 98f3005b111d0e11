"""Stopping the running poller within a bound: the reload path (SIGHUP, a configuration bundle
applied in place, a rollback, the technician's pin) and the shutdown.

``Poller.stop()`` asks the poller to end; its run task ends once every running job was cancelled
(a job of a serial line or an endpoint: within milliseconds). A task that has not ended within
``grace_s`` is cancelled; one that still has not ended within ``cancel_s`` is left behind and
said once at warning (``poller_stop_stuck``). The daemon then restarts (exit 75, the unit starts
it again) rather than start a second poller beside one that may still hold the lines (a serial
port is locked by its owner) -- or go on as a gateway that silently polls nothing.

The bus owners are closed concurrently, each close waiting at most ``close_s`` for the
transaction it waits for (a close that overruns goes on in the background; a bus not closed
yet is named in the log line).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from edge_agent.poll.engine import Poller

log = logging.getLogger("edge_agent")

GRACE_S = 5.0  # after stop(): the poller's task is cancelled
CANCEL_S = 2.0  # after that cancel: the task is left behind, the daemon restarts
CLOSE_S = 2.0  # the bus owners' close

# closes that overran (a reference until they end, so none is collected while pending)
_closing: set[asyncio.Task[None]] = set()


async def stop_poller(task: asyncio.Task[None] | None, poller: Poller | None,
                      buses: dict[str, Any], *, during: str, grace_s: float = GRACE_S,
                      cancel_s: float = CANCEL_S, close_s: float = CLOSE_S) -> bool:
    """Stop ``poller`` (its run ``task``) and close ``buses``. True when the task ended; False
    when it did not even once cancelled (logged ``poller_stop_stuck``: the caller restarts)."""
    t0 = time.monotonic()
    if poller is not None:
        poller.stop()
    ended, cancelled = True, False
    if task is not None:
        ended = await _ended(task, grace_s)
        if not ended:
            cancelled = True
            task.cancel()
            ended = await _ended(task, cancel_s)
    open_ = await close_buses(buses, close_s)
    if not ended:
        log.warning("poller_stop_stuck during=%s waited_s=%.1f cancelled=yes buses_open=%s "
                    "(the poller's task did not end: the daemon restarts)", during,
                    time.monotonic() - t0, ",".join(open_) or "-")
    elif open_:
        log.warning("bus_close_slow during=%s buses=%s waited_s=%.1f cancelled=%s (closing on "
                    "in the background)", during, ",".join(open_), close_s,
                    "yes" if cancelled else "no")
    return ended


async def _ended(task: asyncio.Task[None], within_s: float) -> bool:
    await asyncio.wait((task,), timeout=max(0.0, within_s))
    if not task.done():
        return False
    if not task.cancelled():
        task.exception()  # retrieved: a poller failing as it stops is no crash
    return True


async def close_buses(owners: dict[str, Any], within_s: float) -> list[str]:
    """Close every owner, concurrently; the names of those not closed within ``within_s`` (a
    close waits for the owner's transaction in progress; theirs go on in the background)."""
    if not owners:
        return []
    closing = {asyncio.create_task(_close(owner)): name for name, owner in owners.items()}
    await asyncio.wait(closing, timeout=max(0.0, within_s))
    late = []
    for t, name in closing.items():
        if not t.done():
            late.append(name)
            _closing.add(t)
            t.add_done_callback(_closing.discard)
    return late


async def _close(owner: Any) -> None:
    try:
        await owner.close()
    except Exception as exc:  # a bus that fails to close is closed as far as it goes
        log.debug("bus_close_failed err=%r", exc)
