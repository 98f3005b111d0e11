"""Benchmark: serve the 1,000-device district scenario on one core, hammer it from another process.

    .venv/bin/python -m benchmarks.sim_district [--requests N] [--workers W] [--core C]

The server (this process) is pinned to one core and runs every TCP endpoint of the scenario in one
asyncio loop. A separate client process (``--client``, pinned to another core when there is one)
opens one connection per endpoint (500 gateways x 2 units) and runs a bounded request loop: W
workers, each with one request in flight, until N requests are answered. Requests alternate between
the lamp's input registers (10) and the environment module's holding registers (9), so every read
runs the behaviour model and the profile codec. Prints requests/s and the server's CPU seconds per
1,000 requests (getrusage of this process over the hammering window).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import struct
import sys
import time
from typing import Any

REQUESTS = (struct.pack(">HBBHH", 6, 1, 4, 0, 10), struct.pack(">HBBHH", 6, 2, 3, 0, 9))


class _Run:
    """Shared state of the client's workers."""

    def __init__(self, requests: int, workers: int) -> None:
        self.budget = requests
        self.errors = 0
        self.waiting = workers
        self.connected = asyncio.Event()
        self.go = asyncio.Event()


async def _worker(ports: list[int], run: _Run) -> int:
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        for port in ports:
            conns.append(await asyncio.open_connection("127.0.0.1", port))
        run.waiting -= 1
        if run.waiting == 0:
            run.connected.set()
        await run.go.wait()
        done = tid = 0
        while run.budget > 0:
            run.budget -= 1
            reader, writer = conns[tid % len(conns)]
            tid = (tid + 1) & 0xFFFF
            writer.write(struct.pack(">HH", tid, 0) + REQUESTS[tid % 2])
            head = await reader.readexactly(7)
            rtid, _, length, _ = struct.unpack(">HHHB", head)
            body = await reader.readexactly(length - 1)
            if rtid != tid or body[0] & 0x80:
                run.errors += 1
            done += 1
        return done
    finally:
        for _, writer in conns:
            writer.close()


async def _client(ports: list[int], requests: int, workers: int) -> dict[str, Any]:
    shares = [ports[i::workers] for i in range(workers) if ports[i::workers]]
    run = _Run(requests, len(shares))
    t_connect = time.perf_counter()
    tasks = [asyncio.create_task(_worker(s, run)) for s in shares]
    await run.connected.wait()
    t0, c0 = time.perf_counter(), time.process_time()
    run.go.set()
    done = sum(await asyncio.gather(*tasks))
    return {"requests": done, "errors": run.errors, "wall_s": time.perf_counter() - t0,
            "client_cpu_s": time.process_time() - c0, "connections": len(ports),
            "connect_s": t0 - t_connect}


def _pin(core: int | None) -> str:
    cores = sorted(os.sched_getaffinity(0))
    if core is None or core not in cores:
        return "unpinned"
    os.sched_setaffinity(0, {core})
    return str(core)


async def _serve(args: argparse.Namespace) -> dict[str, Any]:
    from simulators.clock import SimClock
    from simulators.scenario import Scenario

    t0 = time.perf_counter()
    scenario = Scenario.load("district", clock=SimClock(speed=1.0, start_s=20 * 3600))
    async with scenario:
        startup_s = time.perf_counter() - t0
        ports = [ep.port for ep in scenario.endpoints.values()]
        cores = sorted(os.sched_getaffinity(0))
        client_core = next((c for c in cores if c != args.core), args.core)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "benchmarks.sim_district", "--client", "--core",
            str(client_core), "--requests", str(args.requests), "--workers", str(args.workers),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        out, _ = await proc.communicate(json.dumps(ports).encode())
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        if proc.returncode != 0:
            raise SystemExit(f"client failed with status {proc.returncode}")
        result: dict[str, Any] = json.loads(out)
        served = sum(d.requests for d in scenario.devices.values())
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    result.update(devices=len(scenario.devices), endpoints=len(ports), startup_s=startup_s,
                  server_cpu_s=cpu, served=served, max_rss_mib=r1.ru_maxrss / 1024)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sim_district")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=64, help="requests in flight")
    parser.add_argument("--core", type=int, default=0, help="CPU core to pin to")
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    pinned = _pin(args.core)
    if args.client:
        ports = json.loads(sys.stdin.read())
        print(json.dumps(asyncio.run(_client(ports, args.requests, args.workers))))
        return 0
    r = asyncio.run(_serve(args))
    rate = r["requests"] / r["wall_s"]
    per_k = 1000 * r["server_cpu_s"] / max(1, r["requests"])
    print(f"district: {r['devices']} devices on {r['endpoints']} TCP endpoints (pymodbus server,"
          f" one asyncio loop, core {pinned}), started in {r['startup_s']:.2f} s, "
          f"max RSS {r['max_rss_mib']:.0f} MiB")
    print(f"requests: {r['requests']} ({r['errors']} errors) with {args.workers} in flight over "
          f"{r['connections']} connections in {r['wall_s']:.2f} s (after "
          f"{r['connect_s']:.2f} s of connecting)")
    print(f"throughput: {rate:,.0f} requests/s")
    print(f"server CPU: {r['server_cpu_s']:.2f} s = {per_k:.3f} CPU s per 1000 requests "
          f"(client CPU {r['client_cpu_s']:.2f} s)")
    print(f"CPU-bound capacity of the core: {1000 / per_k:,.0f} requests/s "
          f"(load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    print(f"at one poll of every device per 10 s the district needs {1000 / 10:.0f} requests/s: "
          f"{100 * per_k / 1000 * 100:.1f} % of this core")
    return 0 if r["errors"] == 0 and r["served"] >= r["requests"] else 1


if __name__ == "__main__":
    sys.exit(main())
