"""Benchmark: the poller's CPU per reading and its memory, polling a district of TCP devices.

    .venv/bin/python -m benchmarks.poll_district [--interval 1.0] [--seconds 20] [--poles 500]

A child process serves the ``district`` scenario (500 poles, each a Modbus TCP gateway with a lamp
controller and an environment module: 1,000 devices on 500 ports), so this process's CPU is the
agent's alone. This process runs the real Poller with one real ``TcpEndpoint`` owner per pole,
every device at ``--interval`` (all its points in one group). After a warm-up, it measures over
``--seconds``: CPU (getrusage, user + system) per request and per reading (before the report
filter: every decoded value), readings emitted (after it), missed deadlines, failures, and the
resident set size.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from edge_agent.bus.tcp_endpoint import TcpEndpoint
from edge_agent.config.model import DeviceConfig, TcpBus
from edge_agent.platform.clock import ClockProbe
from edge_agent.poll.engine import Poller
from edge_agent.profiles.load import load_profiles
from edge_agent.profiles.shipped import shipped_dir
from simulators.agent_config import make_config


async def _serve(poles: int) -> None:
    """Child: serve the district scenario; print its endpoints as JSON; run until stdin closes."""
    from simulators.clock import SimClock
    from simulators.scenario import Scenario

    scenario = Scenario.load("district", clock=SimClock(speed=1.0, start_s=20 * 3600))
    for name in sorted(scenario.endpoints)[poles:]:
        del scenario.endpoints[name]
    async with scenario:
        eps = [
            {"name": name, "port": ep.port,
             "units": [[d.unit_id, d.profile.name, d.name] for d in ep.devices]}
            for name, ep in scenario.endpoints.items()
        ]
        print(json.dumps(eps), flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _poll(eps: list[dict[str, Any]], interval: float, warmup: float,
                seconds: float) -> dict[str, Any]:
    profiles = load_profiles(shipped_dir())
    buses = [TcpBus(ep["name"], "127.0.0.1", ep["port"], concurrency=2, timeout_max_s=2.0)
             for ep in eps]
    devs = [DeviceConfig(name, prof, ep["name"], unit_id=unit, interval_s=interval)
            for ep in eps for unit, prof, name in ep["units"]]
    used = {d.profile for d in devs}
    cfg = make_config(buses, devs, [p for n, p in profiles.items() if n in used])
    owners = {b.name: TcpEndpoint(b) for b in buses}
    emitted = 0

    def sink(_r: object) -> None:
        nonlocal emitted
        emitted += 1

    rss0 = _rss_mib()
    poller = Poller(cfg, dict(owners), sink, clock=ClockProbe())
    task = asyncio.create_task(poller.run())

    def totals() -> tuple[int, int, int]:
        st = poller.status().values()
        return (sum(s["requests"] for s in st), sum(s["missed_deadlines"] for s in st),
                sum(s["failures"] for s in st))

    try:
        await asyncio.sleep(warmup)
        req0, miss0, fail0 = totals()
        made0, emit0, cpu0, t0 = poller.readings_made, emitted, _cpu_s(), time.monotonic()
        await asyncio.sleep(seconds)
        req1, miss1, fail1 = totals()
        made1, emit1, cpu1, t1 = poller.readings_made, emitted, _cpu_s(), time.monotonic()
        rss1 = _rss_mib()
    finally:
        poller.stop()
        await task
        for o in owners.values():
            await o.close()
    wall, cpu = t1 - t0, cpu1 - cpu0
    made, reqs = made1 - made0, req1 - req0
    return {
        "devices": len(devs), "endpoints": len(buses), "interval_s": interval,
        "window_s": round(wall, 2),
        "requests_per_s": round(reqs / wall, 1),
        "readings_per_s": round(made / wall, 1),
        "emitted_per_s": round((emit1 - emit0) / wall, 1),
        "cpu_cores": round(cpu / wall, 3),
        "cpu_us_per_request": round(1e6 * cpu / reqs, 1) if reqs else None,
        "cpu_us_per_reading": round(1e6 * cpu / made, 1) if made else None,
        "missed_deadlines": miss1 - miss0,
        "failures": fail1 - fail0,
        "rss_mib_before_poller": round(rss0, 1),
        "rss_mib": round(rss1, 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="benchmarks.poll_district", description=__doc__)
    ap.add_argument("--interval", type=float, default=1.0, help="poll interval of every device")
    ap.add_argument("--seconds", type=float, default=20.0, help="measuring window")
    ap.add_argument("--warmup", type=float, default=4.0)
    ap.add_argument("--poles", type=int, default=500, help="poles (2 devices each), up to 500")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve:
        asyncio.run(_serve(args.poles))
        return 0
    child = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.poll_district", "--serve", "--poles", str(args.poles)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdin is not None
        eps = json.loads(child.stdout.readline())
        result = asyncio.run(_poll(eps, args.interval, args.warmup, args.seconds))
    finally:
        if child.stdin:
            child.stdin.close()
        child.wait(30)
    width = max(len(k) for k in result)
    for k, v in result.items():
        print(f"{k:<{width}}  {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
