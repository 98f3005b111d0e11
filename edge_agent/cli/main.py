"""Entry point of `edge-agent`. Every module ``edge_agent/cli/cmd_*.py`` exposes

    def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None

which adds its sub-command(s) and sets ``func`` (``(args) -> int`` exit status) on each parser.
Modules are discovered, so adding a command touches no shared file.

Only the module of the command being run is imported: each module's source is read (not
imported) for its ``sub.add_parser("NAME"`` calls, so `edge-agent run` (the daemon) and
`edge-agent status` load what they need and not every other command's dependencies. Help, no
command, or a name the scan does not find (e.g. a computed one) import every module: the index
only ever saves work, it never decides what exists.

The parser itself is cli/parser.py. The daemon's usual command line (`edge-agent run` with
``--config`` / ``--log-level``) is read by cli/cmd_run.py without it: the daemon then holds no
argparse, gettext, locale, pkgutil or cli/common.py (issue #15's memory); anything else on a
`run` line goes through the parser as every command does.

Every failure ends in one line (or one JSON object with ``--json``, cli/common.py): a usage error
(``EdgeAgentParser.error``), a ``CliError`` a command raised, anything ``cli/failure.py`` can
explain, Ctrl-C (130), a closed pipe (141, silent); a bug is one line too ("internal error", with
the traceback only when ``EDGE_AGENT_DEBUG=1``).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import edge_agent.cli as cli_pkg

if TYPE_CHECKING:
    import argparse

_ADD_PARSER = re.compile(r"""\bsub\.add_parser\(\s*["']([A-Za-z0-9][A-Za-z0-9_-]*)["']""")


def command_modules() -> list[str]:
    import pkgutil

    return sorted(m.name for m in pkgutil.iter_modules(cli_pkg.__path__)
                  if m.name.startswith("cmd_"))


def command_index() -> dict[str, str]:
    """Top-level command name → the cmd_* module that registers it, from the modules' source."""
    index: dict[str, str] = {}
    here = Path(cli_pkg.__file__).parent
    for name in command_modules():
        try:
            text = (here / f"{name}.py").read_text(encoding="utf-8")
        except OSError:
            continue  # e.g. only byte code installed: that module is imported with the rest
        for command in _ADD_PARSER.findall(text):
            index.setdefault(command, name)
    return index


def terminal_columns() -> int:
    """``shutil.get_terminal_size().columns`` (COLUMNS, else the terminal of stdout, else 80)
    without importing shutil."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser with every command, or only ``command``'s module when the index knows it
    (cli/parser.py)."""
    from edge_agent.cli.parser import make_parser

    return make_parser(command)


def _command(argv: Sequence[str]) -> str | None:
    """The command word, or None when help is asked first (``--version``: no command needed)."""
    for arg in argv:
        if arg == "--version":
            return arg
        if arg in ("-h", "--help"):
            return None
        if not arg.startswith("-"):
            return arg
    return None


def _quiet_stdout() -> None:
    """The reader of our stdout went away: point it at /dev/null so that the interpreter's
    final flush does not complain a second time."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def run_command(func: Callable[[argparse.Namespace], int], args: argparse.Namespace,
                prog: str) -> int:
    """``func(args)``, every failure turned into one line (or JSON object) and an exit code.
    (cli/common.py only on a failure: the daemon's `run` does not load it to start.)"""
    as_json = bool(getattr(args, "json", False))  # cli/common.py's wants_json(args)
    try:
        return func(args)
    except KeyboardInterrupt:
        from edge_agent.cli.codes import EXIT_INTERRUPTED

        if not as_json:
            print(f"\n{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        from edge_agent.cli.codes import EXIT_PIPE

        _quiet_stdout()
        return EXIT_PIPE
    except Exception as exc:
        from edge_agent.cli.common import CliError, report
        from edge_agent.cli.failure import as_cli_error

        sock = None
        try:
            from edge_agent.cli.common import socket_path

            sock = socket_path(args) if hasattr(args, "socket") else None
        except Exception:  # the failure we report may be this very one
            pass
        err = as_cli_error(exc, sock)
        if err is None:
            if os.environ.get("EDGE_AGENT_DEBUG"):
                raise
            err = CliError(f"internal error: {type(exc).__name__}: {exc}",
                           "please report it (EDGE_AGENT_DEBUG=1 shows where it happened)",
                           1, "internal")
        try:
            return report(prog, err, as_json)
        except BrokenPipeError:
            from edge_agent.cli.codes import EXIT_PIPE

            _quiet_stdout()
            return EXIT_PIPE


def quiet_logging(command: str | None) -> None:
    """A command's output is its own lines: the library and bus log lines (``connect_failed``
    ...) that would otherwise reach the terminal through logging's last-resort handler are
    dropped, or shown in full with ``EDGE_AGENT_DEBUG=1``. The daemon (`run`) and long-running
    consumers configure their own logging."""
    import logging

    if command in ("run", "--version") or logging.getLogger().handlers:
        return
    if os.environ.get("EDGE_AGENT_DEBUG"):
        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr,
                            format="%(levelname)s %(name)s %(message)s")
    else:
        logging.getLogger().addHandler(logging.NullHandler())


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:  # before the command ran (imports, parsing)
        return 130


def _main(argv: Sequence[str] | None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    if args_in[:1] == ["run"]:  # the daemon: its usual line without argparse (cli/parser.py)
        from edge_agent.cli.cmd_run import quick_args

        quick = quick_args(args_in[1:])
        if quick is not None:
            return run_command(quick.func, quick, "edge-agent run")
    from edge_agent.cli.parser import SUBCOMMAND_DESTS, EdgeAgentParser, innermost

    EdgeAgentParser.json_errors = "--json" in args_in
    parser = build_parser(_command(args_in))
    args, extra = parser.parse_known_args(args_in)
    if extra:  # said by the sub-command that did not know them, with its --help
        innermost(parser, args).error(f"unrecognized arguments: {' '.join(extra)}")
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    prog = "edge-agent " + " ".join(
        x for x in (args.command, *(getattr(args, k, None) for k in SUBCOMMAND_DESTS))
        if isinstance(x, str))
    del parser  # not kept alive while the command runs (the daemon: for its whole life)
    quiet_logging(args.command)
    return run_command(func, args, prog)


if __name__ == "__main__":
    sys.exit(main())
