"""`edge-agent run --config PATH`: the daemon (what systemd starts)."""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from edge_agent.cli.common import DEFAULT_CONFIG, EXIT_USAGE
from edge_agent.errors import ConfigError, EdgeAgentError


def setup_logging(level: str) -> None:
    # under systemd, journald stamps time and unit; elsewhere add a timestamp
    fmt = "%(levelname)s %(name)s %(message)s"
    if not os.environ.get("JOURNAL_STREAM"):
        fmt = "%(asctime)s " + fmt
    logging.basicConfig(level=getattr(logging, level.upper()), format=fmt, stream=sys.stderr)
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


def _run(args: argparse.Namespace) -> int:
    from edge_agent.service.daemon import Agent

    setup_logging(args.log_level)
    # `kill -USR1 PID` dumps every thread's stack to the journal: hangs are diagnosable in the field
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    log = logging.getLogger("edge_agent")
    try:
        agent = Agent(args.config)
    except ConfigError as exc:
        for p in exc.problems:
            log.error("config_invalid %s", p)
        return EXIT_USAGE
    except EdgeAgentError as exc:
        log.error("start_refused err=%s", exc)
        return EXIT_USAGE
    return asyncio.run(agent.run())


def register(sub: Any) -> None:
    p = sub.add_parser("run", help="run the gateway daemon (systemd starts this)")
    p.add_argument("--config", "-c", type=Path,
                   default=Path(os.environ.get("EDGE_AGENT_CONFIG", DEFAULT_CONFIG)),
                   help=f"agent.toml (default: $EDGE_AGENT_CONFIG, else {DEFAULT_CONFIG})")
    p.add_argument("--log-level", default=os.environ.get("EDGE_AGENT_LOG_LEVEL", "info"),
                   choices=["debug", "info", "warning", "error"],
                   help="(default: $EDGE_AGENT_LOG_LEVEL, else info)")
    p.set_defaults(func=_run)
