"""``edge-agent`` under tracemalloc (benchmarks only): where the daemon's Python memory sits.

    python -m benchmarks._traced OUT.snap run --config agent.toml

Tracing starts before the daemon's imports (one frame per allocation); each SIGUSR2 writes a
snapshot to ``OUT.snap`` (``tracemalloc.Snapshot.load``). Tracing costs memory and CPU of its own:
use the shares and sites, not the RSS of such a run.
"""

from __future__ import annotations

import os
import signal
import sys
import tracemalloc
from types import FrameType


def run() -> int:
    out, argv = sys.argv[1], sys.argv[2:]
    tracemalloc.start(1)

    def dump(_sig: int, _frame: FrameType | None) -> None:
        tracemalloc.take_snapshot().dump(out + ".part")
        os.replace(out + ".part", out)  # whole, or not there yet

    signal.signal(signal.SIGUSR2, dump)
    from edge_agent.cli.main import main

    return main(argv)


def summarize(path: str, top: int = 25) -> str:
    snap = tracemalloc.Snapshot.load(path).filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__)])
    stats = snap.statistics("lineno")
    total = sum(s.size for s in stats)
    lines = [f"tracemalloc: {total / 2**20:.1f} MiB traced in {sum(s.count for s in stats):,} "
             "blocks; top sites:"]
    for s in stats[:top]:
        fr = s.traceback[0]
        lines.append(f"  {s.size / 2**10:9.0f} KiB {s.count:8,}  {fr.filename}:{fr.lineno}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(run())
