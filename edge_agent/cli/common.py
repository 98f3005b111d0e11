"""Shared CLI plumbing: where the control socket is, --json output, readable tables, exit codes,
and the one way a command fails: ``raise CliError(message, hint, exit)``.

Exit codes (every command): 0 ok, 1 the operation failed or a check did not pass, 2 bad usage,
an unknown name or a bad config, 3 the daemon is not reachable or this user lacks a right
(stopped; or may not use its socket, read its config or open the serial port), 4 timed out /
no answer, 130 interrupted (Ctrl-C), 141 the reader of our output went away (``edge-agent tail
| head``: quiet, like any Unix filter).

An error is ONE line on stderr, ``edge-agent COMMAND: what happened; what to do``; with ``--json``
it is one JSON object on stdout instead: ``{"ok": false, "error": CODE, "message": ...,
"hint": ..., "exit": N}`` (see ``report``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from edge_agent.cli import codes
from edge_agent.errors import EdgeAgentError

# the commands take them from here; defined in cli/codes.py, which the daemon's `run` imports alone
DEFAULT_CONFIG, DEFAULT_SOCKET = codes.DEFAULT_CONFIG, codes.DEFAULT_SOCKET
EXIT_OK, EXIT_FAIL, EXIT_USAGE = codes.EXIT_OK, codes.EXIT_FAIL, codes.EXIT_USAGE
EXIT_NO_DAEMON, EXIT_TIMEOUT = codes.EXIT_NO_DAEMON, codes.EXIT_TIMEOUT
EXIT_INTERRUPTED, EXIT_PIPE = codes.EXIT_INTERRUPTED, codes.EXIT_PIPE


class CliError(EdgeAgentError):
    """A command cannot go on: ``message`` says what happened, ``hint`` what to do about it."""

    def __init__(self, message: str, hint: str = "", exit: int = EXIT_FAIL,
                 code: str = "failed", data: dict[str, Any] | None = None) -> None:
        self.message = message
        self.hint = hint
        self.exit = exit
        self.code = code
        self.data = data  # with --json: more fields of the error object (e.g. partial results)
        super().__init__(f"{message}; {hint}" if hint else message)


class _ConfigAction(argparse.Action):
    """``--config PATH``: remembers that the path was given (then it must exist)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        setattr(namespace, self.dest, Path(values))
        namespace.config_given = True


def add_config(p: argparse.ArgumentParser) -> None:
    env = os.environ.get("EDGE_AGENT_CONFIG", "").strip()  # empty: unset, not "."
    p.add_argument("--config", "-c", type=Path, action=_ConfigAction,
                   default=Path(env) if env else DEFAULT_CONFIG,
                   help=f"agent.toml (default: $EDGE_AGENT_CONFIG, else {DEFAULT_CONFIG})")
    p.set_defaults(config_given=bool(env))


def add_common(p: argparse.ArgumentParser, *, config: bool = True) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output (errors too)")
    p.add_argument("--socket", type=Path, help=f"control socket (default: $EDGE_AGENT_SOCKET, "
                   f"runtime_dir/control.sock of --config, or {DEFAULT_SOCKET})")
    if config:
        add_config(p)


def maybe_exists(path: Path) -> bool:
    """False only when ``path`` is known not to exist: one the caller may not look at (a
    directory not searchable, /etc/edge-agent 0750 to a technician outside the group) may be
    there, and reading it says why not."""
    try:
        os.stat(path)
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def config_path(args: argparse.Namespace) -> Path:
    """The config the command should use; CliError when one was named and is not there."""
    cfg = Path(getattr(args, "config", None) or DEFAULT_CONFIG)
    if getattr(args, "config_given", False) and not maybe_exists(cfg):
        raise CliError(f"no config file at {cfg}", "check the --config path "
                       "(or $EDGE_AGENT_CONFIG)", EXIT_USAGE, "no_config")
    return cfg


def socket_path(args: argparse.Namespace) -> Path:
    """--socket, $EDGE_AGENT_SOCKET, runtime_dir of the config, or the default socket. A config
    named explicitly must exist and load (no silent fallback to another gateway's socket)."""
    cfg = config_path(args)
    if getattr(args, "socket", None):
        return Path(args.socket)
    env = os.environ.get("EDGE_AGENT_SOCKET")
    if env:
        return Path(env)
    if getattr(args, "config_given", False) or maybe_exists(cfg):
        from edge_agent.errors import ConfigError

        try:
            from edge_agent.config.load import load_config

            return load_config(cfg).runtime_dir / "control.sock"
        except ConfigError as exc:
            if getattr(args, "config_given", False):
                from edge_agent.cli.failure import unreadable

                denied = unreadable(cfg)
                if denied is not None:
                    raise CliError(denied.message, denied.hint, denied.exit,
                                   denied.code) from None
                first = exc.problems[0] if exc.problems else "invalid"
                raise CliError(f"{cfg} does not load ({first})",
                               f"run: edge-agent check-config {cfg}", EXIT_USAGE,
                               "bad_config") from None
        except OSError as exc:  # e.g. not readable by this user: the default socket then
            if getattr(args, "config_given", False):
                from edge_agent.cli.failure import unreadable

                denied = unreadable(cfg)
                if denied is not None:
                    raise CliError(denied.message, denied.hint, denied.exit,
                                   denied.code) from None
                raise CliError(f"cannot read {cfg}: {exc.strerror or exc}",
                               "check the --config path", EXIT_USAGE, "bad_config") from None
    return DEFAULT_SOCKET


def wants_json(args: argparse.Namespace | None, argv: Sequence[str] = ()) -> bool:
    return bool(getattr(args, "json", False)) or "--json" in argv


def emit(args: argparse.Namespace, obj: Any, human: str) -> None:
    if getattr(args, "json", False):
        print(json.dumps(obj, indent=2, default=str, ensure_ascii=False))
    else:
        print(human)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]],
          right: Iterable[int] = ()) -> str:
    """Columns padded to their widest cell; ``right``: indexes of right-aligned columns."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    ralign = set(right)

    def line(r: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if i in ralign else c.ljust(w)
                         for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip()

    lines = [line(r) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def fail(msg: str, code: int = EXIT_FAIL) -> int:
    print(msg, file=sys.stderr)
    return code


def suggest(word: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """The names closest to ``word``, best first (profiles/names.py: ``lamp-1`` is
    ``lamp-01``)."""
    from edge_agent.profiles.names import closest

    return closest(word, choices, n)


class UnknownName(CliError):
    """``no device 'lamp-1' (did you mean 'lamp-01'?)``, exit 2, with where to see them all."""

    def __init__(self, kind: str, word: str, choices: Iterable[str], listing: str = "",
                 what: str = "") -> None:
        names = sorted(set(choices))
        close = suggest(word, names)
        kinds = kind + ("es" if kind.endswith("s") else "s")
        if close:
            hint = "did you mean " + " or ".join(repr(c) for c in close) + "?"
        elif names and len(names) <= 8:
            hint = f"{kinds} here: {', '.join(names)}"
        elif names:
            hint = f"{len(names)} {kinds} here" + (f", see: {listing}" if listing else "")
        else:
            hint = f"there are no {kinds} here"
        if close and listing:
            hint += f" (all of them: {listing})"
        msg = f"no {kind} {word!r}" + (f" ({what})" if what else "")
        super().__init__(msg, hint, EXIT_USAGE, f"unknown_{kind}")


def report(prog: str, err: CliError, as_json: bool) -> int:
    """Print ``err`` as the one line (or JSON object) a command ends with; its exit code."""
    if as_json:
        obj = {"ok": False, "error": err.code, "message": err.message, "hint": err.hint,
               "exit": err.exit, **(err.data or {})}
        try:
            print(json.dumps(obj, ensure_ascii=False), flush=True)
        except BrokenPipeError:
            pass
    else:
        text = f"{prog}: {err.message}" + (f"; {err.hint}" if err.hint else "")
        print(" ".join(text.split()), file=sys.stderr, flush=True)
    return err.exit
