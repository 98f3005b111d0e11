"""`edge-agent run --config PATH`: the daemon (what systemd starts).

Its usual command line is read here (``quick_args``), not by argparse: the daemon would hold
argparse, gettext and locale (~0.55 MiB, issue #15's memory) for two options read once. Only the
plain forms are read so; anything else (``--help``, an abbreviation, ``-cPATH``, a value that
looks like an option, an unknown level or option) returns None and cli/main.py parses the line
with argparse as every command, with the same answers and errors as before.
"""

from __future__ import annotations

import asyncio
import faulthandler
import logging
import os
import signal
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, cast

from edge_agent.cli.codes import DEFAULT_CONFIG, EXIT_USAGE
from edge_agent.errors import ConfigError, EdgeAgentError

if TYPE_CHECKING:
    import argparse

LOG_LEVELS = ("debug", "info", "warning", "error")
LEFTOVER_S = 2.0  # at exit: how long the tasks still running get to end once cancelled


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
    return run_loop(agent.run())


def run_loop(main: Coroutine[Any, Any, int], leftover_s: float = LEFTOVER_S) -> int:
    """``asyncio.run(main)``, except that the tasks left when ``main`` returned get
    ``leftover_s`` to end once cancelled, not for ever: one that does not (a poller left behind,
    ``poller_stop_stuck``) must not keep the daemon from exiting -- its exit 75 is the unit's cue
    to start it again."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(main)
    finally:
        try:
            left = asyncio.all_tasks(loop)
            for task in left:
                task.cancel()
            if left:
                loop.run_until_complete(asyncio.wait(left, timeout=leftover_s))
                stuck = [t for t in left if not t.done()]
                if stuck:
                    logging.getLogger("edge_agent").warning(
                        "exit_tasks_stuck n=%d waited_s=%.1f (left pending: the process exits)",
                        len(stuck), leftover_s)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


def _defaults() -> dict[str, Any]:
    return {"config": Path(os.environ.get("EDGE_AGENT_CONFIG", DEFAULT_CONFIG)),
            "log_level": os.environ.get("EDGE_AGENT_LOG_LEVEL", "info")}


def quick_args(argv: Sequence[str]) -> argparse.Namespace | None:
    """What argparse makes of ``edge-agent run ARGV`` for its plain forms (``--config PATH``,
    ``-c PATH``, ``--config=PATH``, ``--log-level LEVEL``, ``--log-level=LEVEL``; the last of a
    repeated option wins), else None: the caller asks argparse (``register``)."""
    values = _defaults()
    i = 0
    while i < len(argv):
        name, eq, value = argv[i].partition("=")
        if name not in ("--config", "-c", "--log-level") or (eq and name == "-c"):
            return None  # help, an abbreviation, -cPATH / -c=PATH, an unknown option, a word
        if not eq:
            i += 1
            if i == len(argv):
                return None
            value = argv[i]
        if not value or value.startswith("-"):
            return None  # argparse's own reading of those (an option? a negative number?)
        if name == "--log-level":
            if value not in LOG_LEVELS:
                return None
            values["log_level"] = value
        else:
            values["config"] = Path(value)
        i += 1
    # the attributes argparse sets for `run` (its Namespace is not imported for this)
    return cast("argparse.Namespace", SimpleNamespace(command="run", func=_run, **values))


def register(sub: Any) -> None:
    p = sub.add_parser("run", help="run the gateway daemon (systemd starts this)")
    defaults = _defaults()
    p.add_argument("--config", "-c", type=Path, default=defaults["config"],
                   help=f"agent.toml (default: $EDGE_AGENT_CONFIG, else {DEFAULT_CONFIG})")
    p.add_argument("--log-level", default=defaults["log_level"], choices=LOG_LEVELS,
                   help="(default: $EDGE_AGENT_LOG_LEVEL, else info)")
    p.set_defaults(func=_run)
