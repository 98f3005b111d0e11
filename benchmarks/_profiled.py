"""``edge-agent`` with the event-loop thread under cProfile on demand (benchmarks only).

    python -m benchmarks._profiled OUT.prof run --config agent.toml

The first SIGUSR2 starts profiling the main thread (the event loop: polling, the control socket,
timers) with its own CPU clock (``time.thread_time_ns``: time spent waiting in epoll is not
counted); the second stops it and writes ``OUT.prof`` (pstats). The worker threads (batcher,
uplink) are not profiled. cProfile roughly doubles the CPU of what it measures: use its shares,
not its totals.
"""

from __future__ import annotations

import cProfile
import signal
import sys
import time
from types import FrameType

from edge_agent.cli.main import main


def run() -> int:
    out, argv = sys.argv[1], sys.argv[2:]
    prof = cProfile.Profile(time.thread_time_ns, 1e-9)
    state = {"on": False}

    def toggle(_sig: int, _frame: FrameType | None) -> None:
        if not state["on"]:
            state["on"] = True
            prof.enable()
        else:
            prof.disable()
            state["on"] = False
            prof.dump_stats(out)

    signal.signal(signal.SIGUSR2, toggle)
    return main(argv)


if __name__ == "__main__":
    sys.exit(run())
