"""Shared CLI plumbing: where the control socket is, --json output, readable tables, exit codes.

Exit codes (every command): 0 ok, 1 the operation failed or a check did not pass, 2 bad usage or
config, 3 the daemon is not reachable, 4 timed out / no answer, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DEFAULT_CONFIG = Path("/etc/edge-agent/agent.toml")
DEFAULT_SOCKET = Path("/run/edge-agent/control.sock")
EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_NO_DAEMON, EXIT_TIMEOUT = 0, 1, 2, 3, 4


def add_common(p: argparse.ArgumentParser, *, config: bool = True) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--socket", type=Path, help=f"control socket (default {DEFAULT_SOCKET}, "
                   "or runtime_dir/control.sock of --config)")
    if config:
        p.add_argument("--config", "-c", type=Path,
                       default=Path(os.environ.get("EDGE_AGENT_CONFIG", DEFAULT_CONFIG)),
                       help="agent.toml (default $EDGE_AGENT_CONFIG or /etc/edge-agent/agent.toml)")


def socket_path(args: argparse.Namespace) -> Path:
    if getattr(args, "socket", None):
        return Path(args.socket)
    env = os.environ.get("EDGE_AGENT_SOCKET")
    if env:
        return Path(env)
    cfg = getattr(args, "config", None)
    if cfg is not None and Path(cfg).exists():
        try:
            from edge_agent.config.load import load_config

            return load_config(Path(cfg)).runtime_dir / "control.sock"
        except Exception:  # a broken config must not hide the default socket
            pass
    return DEFAULT_SOCKET


def emit(args: argparse.Namespace, obj: Any, human: str) -> None:
    if getattr(args, "json", False):
        print(json.dumps(obj, indent=2, default=str))
    else:
        print(human)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def fail(msg: str, code: int = EXIT_FAIL) -> int:
    print(msg, file=sys.stderr)
    return code
