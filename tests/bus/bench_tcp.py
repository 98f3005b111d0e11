"""Client CPU cost per Modbus TCP read: own TcpEndpoint vs pymodbus AsyncModbusTcpClient.

    .venv/bin/python -m tests.bus.bench_tcp [--n 20000] [--count 10] [--workers 8]

The server (a minimal asyncio MBAP answerer) runs in a child process, so ``time.process_time``
of this process (user + system) is the client's CPU alone, event loop and syscalls included.
pymodbus' client serialises its requests itself; ``--concurrency`` applies to TcpEndpoint.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

from pymodbus.client import AsyncModbusTcpClient

from edge_agent.bus.tcp_endpoint import TcpEndpoint
from edge_agent.config.model import TcpBus
from edge_agent.profiles.model import Table

SERVER = r"""
import asyncio, sys
async def client(reader, writer):
    try:
        while True:
            head = await reader.readexactly(7)
            body = await reader.readexactly(int.from_bytes(head[4:6], "big") - 1)
            n = int.from_bytes(body[3:5], "big")
            pdu = bytes((body[0], 2 * n)) + bytes(2 * n)
            writer.write(head[:4] + (len(pdu) + 1).to_bytes(2, "big") + head[6:7] + pdu)
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
async def main():
    srv = await asyncio.start_server(client, "127.0.0.1", 0)
    print(srv.sockets[0].getsockname()[1], flush=True)
    await asyncio.sleep(3600)
asyncio.run(main())
"""

ReadFn = Callable[[int], Awaitable[None]]


Times = tuple[float, float, float]  # user CPU s, system CPU s, wall s


async def drive(read: ReadFn, n: int, workers: int) -> Times:
    async def worker(k: int) -> None:
        for i in range(k, n, workers):
            await read(i)

    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(workers)))
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime, time.perf_counter() - t0


async def bench_own(port: int, n: int, count: int, workers: int, conc: int) -> Times:
    ep = TcpEndpoint(TcpBus(name="bench", host="127.0.0.1", port=port, concurrency=conc))

    async def read(i: int) -> None:
        vals = await ep.read(1, Table.HOLDING, i % 100, count, timeout_s=2.0)
        assert len(vals) == count

    try:
        await read(0)
        return await drive(read, n, workers)
    finally:
        await ep.close()


async def bench_pymodbus(port: int, n: int, count: int, workers: int) -> Times:
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2)
    await client.connect()

    async def read(i: int) -> None:
        rr = await client.read_holding_registers(i % 100, count=count, device_id=1)
        assert len(rr.registers) == count

    try:
        await read(0)
        return await drive(read, n, workers)
    finally:
        client.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--count", type=int, default=10)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--concurrency", type=int, default=2)
    args = ap.parse_args()
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        runs = {
            "own TcpEndpoint": bench_own(
                port, args.n, args.count, args.workers, args.concurrency
            ),
            "pymodbus AsyncModbusTcpClient": bench_pymodbus(
                port, args.n, args.count, args.workers
            ),
        }
        for label, coro in runs.items():
            user, system, wall = asyncio.run(coro)
            cpu = user + system
            print(
                f"{label:30s} n={args.n} regs/read={args.count} in-flight={args.concurrency}: "
                f"{cpu / args.n * 1e6:5.1f} us CPU/read (user {user / args.n * 1e6:5.1f}, "
                f"sys {system / args.n * 1e6:5.1f}), {args.n / cpu:6.0f} reads/CPU-s, "
                f"wall {wall:.2f}s"
            )
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
