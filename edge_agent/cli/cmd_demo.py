"""`edge-agent demo`: see simulators/demo/run.py. The demo is lab code (the edge-agent-lab
distribution: simulators, a broker, a verifying consumer), never installed on a gateway; there
this command says in one line how to get it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from edge_agent.cli import argtypes
from edge_agent.cli.common import EXIT_USAGE

NOT_HERE = ("edge-agent demo: the demo is not installed here (a gateway gets the production set "
            "only); run ./scripts/demo in a checkout of edge-agent, or install the lab with "
            "scripts/install --lab")


def _demo(args: argparse.Namespace) -> int:
    try:
        from simulators.demo.run import run_demo
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] not in ("simulators", "pymodbus"):
            raise
        print(NOT_HERE, file=sys.stderr)
        return EXIT_USAGE

    duration = args.duration
    if duration is None and not (sys.stdin.isatty() and sys.stdout.isatty()):
        duration = 30.0  # no terminal to take keystrokes: a scripted run with faults
        args.chaos = True
    return run_demo(duration, args.seed, args.chaos, args.broker, args.workdir)


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="simulated street + broker + agent + verifier, live "
                                    "(lab install only)")
    p.add_argument("--duration", type=argtypes.seconds,
                   help="run S seconds unattended, then verify")
    p.add_argument("--chaos", action="store_true",
                   help="with --duration: kill the broker and a meter on a timer")
    p.add_argument("--seed", type=argtypes.whole(), default=7)
    p.add_argument("--broker", choices=["auto", "mosquitto", "amqtt"], default="auto",
                   help="auto: the system mosquitto when installed, else amqtt (in-process)")
    p.add_argument("--workdir", type=Path, help="keep config, outbox and logs here")
    p.set_defaults(func=_demo)
