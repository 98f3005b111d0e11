"""`edge-agent demo`: see edge_agent/demo/run.py."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def _demo(args: argparse.Namespace) -> int:
    from edge_agent.demo.run import run_demo

    duration = args.duration
    if duration is None and not (sys.stdin.isatty() and sys.stdout.isatty()):
        duration = 30.0  # no terminal to take keystrokes: a scripted run with faults
        args.chaos = True
    return run_demo(duration, args.seed, args.chaos, not args.embedded_broker, args.workdir)


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="simulated street + broker + agent + verifier, live")
    p.add_argument("--duration", type=float, help="run S seconds unattended, then verify")
    p.add_argument("--chaos", action="store_true",
                   help="with --duration: kill the broker and a meter on a timer")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--embedded-broker", action="store_true",
                   help="use the embedded Python broker even when mosquitto is installed")
    p.add_argument("--workdir", type=Path, help="keep config, outbox and logs here")
    p.set_defaults(func=_demo)
