"""Round trips of the gateway's RTU master against the node code (CPython, shim, pty): the
latency per read and what part of it is the node's own t3.5 wait and work.

    PYTHONPATH=. .venv/bin/python -m tests.firmware.bench_node [--n 500] [--baud 115200]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import statistics
import sys
import threading
import time

from edge_agent.bus.serial_line import SerialRtuBus
from edge_agent.config.model import SerialBus
from edge_agent.profiles.model import Table
from tests.firmware import shim
from tests.firmware.conftest import NODE_DIR
from tests.firmware.shim import machine


async def bench(path: str, baud: int, n: int) -> list[float]:
    bus = SerialRtuBus(SerialBus(name="bench", port=path, baud=baud))
    times: list[float] = []
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            regs = await bus.read(7, Table.INPUT, 0, 16, timeout_s=1.0)
            times.append(time.perf_counter() - t0)
            assert len(regs) == 16
    finally:
        await bus.close()
    return times


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--baud", type=int, default=115200)
    args = ap.parse_args()
    shim.install()
    sys.path.insert(0, str(NODE_DIR))
    path = machine.attach_pty(0)
    node = importlib.import_module("main").build(uart_id=0, unit=7, baud=args.baud)
    stop = threading.Event()
    thread = threading.Thread(target=node.run, args=(stop.is_set,), name="fw-node")
    thread.start()
    try:
        times = asyncio.run(bench(path, args.baud, args.n))
    finally:
        stop.set()
        thread.join(5)
        machine.detach_all()
    ms = sorted(t * 1000 for t in times)
    print(f"reads={len(ms)} baud={args.baud} t35_ms={node.slave.t35_us / 1000:.2f} "
          f"mean_ms={statistics.fmean(ms):.2f} p50_ms={ms[len(ms) // 2]:.2f} "
          f"p99_ms={ms[int(len(ms) * 0.99) - 1]:.2f} answered={node.slave.stats[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
