"""CPU cost per Modbus RTU read of SerialRtuBus, the line simulator running in a child process
(so ``getrusage`` of this process is the bus owner's CPU alone: event loop, syscalls, parsing).

    PYTHONPATH=. .venv/bin/python -m tests.bus.bench_rtu [--n 2000] [--baud 115200] [--count 10]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import subprocess
import sys
import time

from edge_agent.bus.serial_line import SerialRtuBus
from edge_agent.config.model import SerialBus
from edge_agent.profiles.model import Table

LINE = r"""
import sys, time
from tests.bus.test_rtu_line_sim import RegDevice
from simulators.transports.rtu_line import RtuLine
line = RtuLine([RegDevice("d1", 1), RegDevice("d2", 2)], baud=int(sys.argv[1]), turnaround_s=0.001)
print(line.start(), flush=True)
sys.stdin.read()
print(len(line.violations), flush=True)
line.stop()
"""


async def bench(path: str, baud: int, n: int, count: int) -> tuple[float, float, float]:
    bus = SerialRtuBus(SerialBus(name="bench", port=path, baud=baud, turnaround_ms=1))

    async def poll(unit: int) -> None:
        for i in range(n // 2):
            vals = await bus.read(unit, Table.HOLDING, i % 100, count, timeout_s=1.0)
            assert len(vals) == count

    try:
        await bus.read(1, Table.HOLDING, 0, 1, timeout_s=1.0)
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        await asyncio.gather(poll(1), poll(2))
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        return r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime, time.perf_counter() - t0
    finally:
        await bus.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--baud", type=int, default=115200)
    ap.add_argument("--count", type=int, default=10)
    args = ap.parse_args()
    sim = subprocess.Popen(
        [sys.executable, "-c", LINE, str(args.baud)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert sim.stdin is not None and sim.stdout is not None
    try:
        path = sim.stdout.readline().strip()
        user, system, wall = asyncio.run(bench(path, args.baud, args.n, args.count))
    finally:
        sim.stdin.close()
        violations = sim.stdout.readline().strip()
        sim.wait()
    cpu = user + system
    print(
        f"SerialRtuBus baud={args.baud} n={args.n} regs/read={args.count}: "
        f"{cpu / args.n * 1e6:.0f} us CPU/read (user {user / args.n * 1e6:.0f}, "
        f"sys {system / args.n * 1e6:.0f}), wall {wall / args.n * 1e3:.2f} ms/read, "
        f"CPU {cpu / wall * 100:.1f}% of one core, t3.5 violations={violations}"
    )


if __name__ == "__main__":
    main()
