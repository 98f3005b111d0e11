"""``edge-agent check-config PATH [--json]``: validate a gateway config (agent.toml) with its
profiles, a single profile file, or a directory of profiles.

Exit 0 with a one-screen summary (buses, devices per bus, points, planned reads), or exit 1 with
every problem, one per line: ``file: key.path: message (did you mean ...)``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tomllib
from dataclasses import asdict
from pathlib import Path
from typing import Any

from edge_agent.cli.common import EXIT_USAGE, CliError, add_config, config_path
from edge_agent.cli.failure import Explained, unreadable
from edge_agent.config.load import load_config
from edge_agent.config.summary import profile_info, render, render_profile, summarize
from edge_agent.errors import ConfigError
from edge_agent.profiles.load import load_profile, load_profiles


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "check-config",
        help="validate agent.toml (or a profile / profile directory) and summarise it",
        description="Validate a gateway config with its device profiles; also accepts one "
                    "profile file or a directory of profiles. Exit 0 and a summary if valid, "
                    "exit 1 and every problem (one per line) if not.")
    p.add_argument("path", type=Path, nargs="?",
                   help="agent.toml, a profile .toml, or a profile directory (default: the "
                        "--config / -c of every other command)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    add_config(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.path is not None and args.config_given and args.path != args.config:
        raise CliError(f"two configs named: {args.path} and --config {args.config}",
                       "give one of them", EXIT_USAGE, "usage")
    path: Path = args.path if args.path is not None else config_path(args)
    denied = unreadable(path) if not os.path.isdir(path) else None
    if denied is not None:  # a right to get, not a problem of the file
        raise Explained(denied)
    try:
        doc, text = _check(path)
    except ConfigError as exc:
        if args.json:
            problems = [{"file": p.file, "path": p.path, "message": p.message, "hint": p.hint}
                        for p in exc.problems]
            print(json.dumps({"ok": False, "problems": problems}, indent=2))
        else:
            for problem in exc.problems:
                print(problem)
            print(f"{len(exc.problems)} problem(s) found", file=sys.stderr)
        return 1
    print(json.dumps({"ok": True, **doc}, indent=2, ensure_ascii=False) if args.json else text)
    return 0


def _check(path: Path) -> tuple[dict[str, Any], str]:
    if path.is_dir():
        infos = [profile_info(p) for p in load_profiles(path).values()]
        text = "\n".join(render_profile(i) for i in infos) or f"{path}: no *.toml profiles"
        return {"kind": "profiles", "profiles": [asdict(i) for i in infos]}, text
    if _is_profile(path):
        info = profile_info(load_profile(path))
        return {"kind": "profile", "profile": asdict(info)}, render_profile(info)
    summary = summarize(load_config(path))
    return {"kind": "config", **summary.to_json()}, render(summary)


def _is_profile(path: Path) -> bool:
    """A profile has top-level [[points]]; anything else is treated as agent.toml."""
    try:
        return "points" in tomllib.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False  # load_config reports it properly
