"""The daemon with a poller that never ends: ``python -m tests.e2e.stuck_poller run --config P``.

Its Poller's run ignores ``stop()`` and drops every cancellation (what a poll job did when
asyncio.wait_for lost the cancel on Python 3.11, made permanent): the fault the daemon's bound on
stopping the poller is there for (service/poller_stop.py). Only for tests/e2e/test_stuck_poller.py.
"""

from __future__ import annotations

import asyncio
import logging
import sys

from edge_agent.cli.main import main
from edge_agent.poll.engine import Poller

log = logging.getLogger("edge_agent.test")


async def _never_ends(self: Poller) -> None:
    log.info("test_poller_started stuck=yes")
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            log.info("test_poller_dropped_cancel")


if __name__ == "__main__":
    Poller.run = _never_ends  # type: ignore[method-assign]
    sys.exit(main(sys.argv[1:]))
