"""How many outbox bytes a week of the street scenario needs (sizes the default [outbox] cap).

    .venv/bin/python -m benchmarks.outbox_sizing [--seconds 240]

Runs the simulated street and the real agent WITHOUT an uplink (so every batch stays in the
outbox), samples the outbox after a warm-up and at the end, and prints readings/s, signed bytes/s
and the projection to one week.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edge_agent.control.client import ControlClient
from simulators.scenario import BackgroundScenario


def sample(sock: Path) -> tuple[float, int, int, int]:
    with ControlClient(sock) as c:
        s = c.call("buffer")["result"]
    return time.monotonic(), int(s["readings"]), int(s["bytes"]), int(s["file_bytes"])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=240.0)
    ap.add_argument("--warmup", type=float, default=30.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, BackgroundScenario.load("street") as sim:
        cfg = sim.write_config(Path(tmp) / "gw", gateway_id="gw-sizing")
        with open(Path(tmp) / "agent.log", "wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "edge_agent.cli.main", "run",
                                     "--config", str(cfg)], stdout=log, stderr=log)
        try:
            sock = Path(tmp) / "gw" / "run" / "control.sock"
            time.sleep(args.warmup)
            t0, r0, b0, f0 = sample(sock)
            time.sleep(args.seconds)
            t1, r1, b1, f1 = sample(sock)
        finally:
            proc.terminate()
            proc.wait(30)
    dt = t1 - t0
    week = 7 * 86400
    rows = [("readings/s", f"{(r1 - r0) / dt:.2f}"),
            ("signed bytes/s", f"{(b1 - b0) / dt:.1f}"),
            ("outbox file bytes/s", f"{(f1 - f0) / dt:.1f}"),
            ("readings per week", f"{(r1 - r0) / dt * week / 1e6:.2f} M"),
            ("signed MiB per week (the cap counts these)",
             f"{(b1 - b0) / dt * week / 2**20:.1f}")]
    w = max(len(k) for k, _ in rows)
    print(f"street scenario, {dt:.0f} s measured after {args.warmup:.0f} s warm-up")
    for k, v in rows:
        print(f"{k:<{w}}  {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
