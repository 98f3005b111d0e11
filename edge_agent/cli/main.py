"""Entry point of `edge-agent`. Every module ``edge_agent/cli/cmd_*.py`` exposes

    def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None

which adds its sub-command(s) and sets ``func`` (``(args) -> int`` exit status) on each parser.
Modules are discovered, so adding a command touches no shared file.

Only the module of the command being run is imported: each module's source is read (not
imported) for its ``sub.add_parser("NAME"`` calls, so `edge-agent run` (the daemon) and
`edge-agent status` load what they need and not every other command's dependencies. Help, no
command, or a name the scan does not find (e.g. a computed one) import every module: the index
only ever saves work, it never decides what exists.

Every failure ends in one line (or one JSON object with ``--json``, cli/common.py): a usage error
(``EdgeAgentParser.error``), a ``CliError`` a command raised, anything ``cli/failure.py`` can
explain, Ctrl-C (130), a closed pipe (141, silent); a bug is one line too ("internal error", with
the traceback only when ``EDGE_AGENT_DEBUG=1``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import edge_agent
import edge_agent.cli as cli_pkg

_ADD_PARSER = re.compile(r"""\bsub\.add_parser\(\s*["']([A-Za-z0-9][A-Za-z0-9_-]*)["']""")


def command_modules() -> list[str]:
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


class EdgeAgentParser(argparse.ArgumentParser):
    """argparse with one-line errors that say what to do, and "did you mean" for choices."""

    json_errors = False  # set by main() when --json is on the command line

    def _get_formatter(self) -> argparse.HelpFormatter:
        # argparse sizes its formatter with shutil.get_terminal_size(), and add_argument() makes
        # one: that imports shutil with bz2, lzma and fnmatch (~0.5 MiB) into the daemon, which
        # never uses them. The same width, found the same way without them.
        make: Callable[..., argparse.HelpFormatter] = self.formatter_class  # argparse's take width
        return make(prog=self.prog, width=terminal_columns() - 2)

    def error(self, message: str) -> NoReturn:
        from edge_agent.cli.common import EXIT_USAGE, CliError, report

        message = re.sub(r"^argument ([A-Z_]+: )?", "", message)
        err = CliError(message, f"see: {self.prog} --help", EXIT_USAGE, "usage")
        sys.exit(report(self.prog, err, EdgeAgentParser.json_errors))

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        choices = action.choices
        if choices is None or value in choices:
            return
        from edge_agent.cli.common import suggest

        names = [str(c) for c in choices]
        close = suggest(str(value), names, n=2)
        what = "command" if isinstance(action, argparse._SubParsersAction) else "choice"
        hint = (f"did you mean {' or '.join(repr(c) for c in close)}?" if close
                else f"one of: {', '.join(names)}")
        raise argparse.ArgumentError(action, f"unknown {what} {value!r} ({hint})")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser with every command, or only ``command``'s module when the index knows it."""
    parser = EdgeAgentParser(
        prog="edge-agent",
        description="City edge gateway agent: poll devices, sign readings, store and forward.",
    )
    version = f"edge-agent {edge_agent.__version__}"
    parser.add_argument("--version", action="version", version=version)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    if command == "--version":
        return parser  # parse_args prints the version and exits
    index = command_index() if command is not None else {}
    for name in [index[command]] if command in index else command_modules():
        module = importlib.import_module(f"edge_agent.cli.{name}")
        module.register(sub)
    return parser


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
    """``func(args)``, every failure turned into one line (or JSON object) and an exit code."""
    from edge_agent.cli.common import EXIT_INTERRUPTED, EXIT_PIPE, wants_json

    as_json = wants_json(args)
    try:
        return func(args)
    except KeyboardInterrupt:
        if not as_json:
            print(f"\n{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
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
    EdgeAgentParser.json_errors = "--json" in args_in
    parser = build_parser(_command(args_in))
    args, extra = parser.parse_known_args(args_in)
    if extra:  # said by the sub-command that did not know them, with its --help
        _innermost(parser, args).error(f"unrecognized arguments: {' '.join(extra)}")
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    prog = "edge-agent " + " ".join(
        x for x in (args.command, *(getattr(args, k, None) for k in _SUBCOMMAND_DESTS))
        if isinstance(x, str))
    quiet_logging(args.command)
    return run_command(func, args, prog)


def _innermost(parser: argparse.ArgumentParser,
               args: argparse.Namespace) -> argparse.ArgumentParser:
    """The parser of the (sub-)sub-command ``args`` were parsed for."""
    for dest in ("command", *_SUBCOMMAND_DESTS):
        name = getattr(args, dest, None)
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not isinstance(name, str) or not subs or name not in subs[0].choices:
            continue
        parser = subs[0].choices[name]
    return parser


# dests of the second-level sub-commands, to name "edge-agent buffer export" in messages
_SUBCOMMAND_DESTS = ("buffer_op", "keys_command", "command_op", "firmware_command",
                     "modbus_op", "profile_op", "completion_shell", "config_op", "fleet_op")


if __name__ == "__main__":
    sys.exit(main())
