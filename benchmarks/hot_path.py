"""Micro-benchmarks of the poller's per-request hot path (issue #15), one process, no network.

    .venv/bin/python -m benchmarks.hot_path [--requests 20000]

* ``run_group``: one 10-point uint16 request through ``DevicePoller.run_group`` on an instant
  in-memory bus (decode, the report filter -- every value changes, so every reading passes --,
  ``Reading``s, health), thread CPU per request;
* ``timers``: a request's timeout pushed and cancelled on ``platform.timers`` with 200 requests
  in flight, their deadlines µs apart (what 40k readings/s looks like), per request;
* ``recv``: a 29-byte answer sent and read on a socketpair with ``recv(256 KiB)`` (asyncio's plain
  protocols: glibc's mmap threshold not raised, then raised by one earlier free of a large
  block) and with ``recv_into`` a small buffer (``bus.tcp_endpoint``'s buffered protocol).

Figures are per operation and move with the machine's load: compare versions interleaved, in
the same minutes (docs/benchmarks.md measured the code before each change with the same loops).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import random
import socket
import time
from collections.abc import Sequence

from edge_agent.config.model import DeviceConfig
from edge_agent.errors import ContractError
from edge_agent.platform.clock import ClockProbe
from edge_agent.platform.timers import Timer, Timers
from edge_agent.poll.device_poll import DevicePoller
from edge_agent.poll.report import ReportFilter
from edge_agent.profiles.model import DataType, ModbusPoint, Point, Profile, Protocol, Table
from edge_agent.readings import Quality, Reading, Value


class _InstantBus:
    """Answers every read at once with values that always change."""

    name = "bus"

    def __init__(self) -> None:
        self.k = 0

    def min_timeout_s(self, table: Table, count: int) -> float:
        return 0.0

    async def read(self, unit: int, table: Table, address: int, count: int, *,
                   timeout_s: float) -> list[int]:
        self.k += 1
        return [(self.k + i) & 0xFFFF for i in range(count)]

    async def write(self, unit: int, table: Table, address: int, values: Sequence[int], *,
                    timeout_s: float) -> None:
        raise ContractError("the hot-path micro-benchmark's instant bus answers reads only")

    async def close(self) -> None:
        return None


def run_group_us(n: int) -> float:
    points = tuple(ModbusPoint(f"p{i}", Table.HOLDING, i, DataType.UINT16) for i in range(10))
    prof = Profile("bench", "v", "m", "bench", Protocol.MODBUS, points)
    dev = DeviceConfig("d1", prof.name, "bus", unit_id=1, interval_s=1.0)
    filt = ReportFilter()
    out: list[Reading] = []

    def offer(device: str, p: Point, value: Value, q: Quality, reason: str, mono: int,
              wall: int, synced: bool) -> None:
        if filt.offer(device, p.name, value, q, reason, mono, p.reporting):
            out.append(Reading(device, p.name, value, p.unit, wall, mono, q, reason,
                               p.reporting.alarm, synced))

    def offer_good(device: str, items: list[tuple[Point, Value]], mono: int, wall: int,
                   synced: bool) -> None:  # what Poller._offer_good does
        out.extend([Reading(device, p.name, v, p.unit, wall, mono, Quality.GOOD, "",
                            p.reporting.alarm, synced)
                    for p, v in filt.offer_good(device, items, mono)])

    dp = DevicePoller(dev, prof, _InstantBus(), 1.0, lambda r, rep: None,
                      ClockProbe(boot_id="bench"), random.Random(1), offer=offer,
                      offer_good=offer_good)
    group = dp.plan.groups[0]

    async def main() -> float:
        for _ in range(1000):
            await dp.run_group(group)
            out.clear()
        t0 = time.thread_time()
        for _ in range(n):
            await dp.run_group(group)
            out.clear()
        return (time.thread_time() - t0) / n * 1e6

    return asyncio.run(main())


def timers_us(n: int) -> float:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        t = Timers(loop)
        base = loop.time() + 100.0
        inflight: collections.deque[Timer] = collections.deque(
            t.call_at(base + i * 25e-6, print) for i in range(200))
        t0 = time.thread_time()
        for i in range(200, 200 + n):
            inflight.append(t.call_at(base + i * 25e-6, print))
            inflight.popleft().cancel()
        took = (time.thread_time() - t0) / n * 1e6
        t.close()
        return took

    return asyncio.run(main())


def recv_us(n: int, how: str) -> float:
    a, b = socket.socketpair()
    try:
        if how == "raised":
            big = bytearray(300_000)  # freed below: glibc raises its mmap threshold past it
            del big
        view = memoryview(bytearray(4096))
        msg = b"x" * 29
        t0 = time.thread_time()
        if how == "recv_into":
            for _ in range(n):
                a.send(msg)
                b.recv_into(view)
        else:
            for _ in range(n):
                a.send(msg)
                b.recv(256 * 1024)
        return (time.thread_time() - t0) / n * 1e6
    finally:
        a.close()
        b.close()


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.hot_path",
                                 description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--requests", type=int, default=20_000)
    args = ap.parse_args()
    n = args.requests
    rows = [
        ("run_group, 10 uint16 points, instant bus", run_group_us(n)),
        ("timeout push + cancel, 200 in flight", timers_us(n * 5)),
        # a fresh process each would be cleaner; recv(256 KiB) first, before anything freed a
        # large block (the "raised" row frees one)
        ("send + recv(256 KiB), mmap threshold as at start", recv_us(n, "fresh")),
        ("send + recv(256 KiB), mmap threshold raised", recv_us(n, "raised")),
        ("send + recv_into(4 KiB buffer)", recv_us(n, "recv_into")),
    ]
    width = max(len(name) for name, _ in rows)
    for name, us in rows:
        print(f"{name:<{width}}  {us:8.2f} µs")


if __name__ == "__main__":
    main()
