"""The argument parser of `edge-agent`: argparse with one-line errors that say what to do, and
"did you mean" for choices (see cli/main.py for how commands are found).

Imported for every command line but the daemon's usual one: `edge-agent run [--config PATH]
[--log-level LEVEL]` is read by cli/cmd_run.py itself (``quick_args``), so the daemon does not
hold argparse, gettext and locale (~0.55 MiB resident, issue #15's memory) for two options it read
once. Anything else on a `run` line (help, a mistake, an abbreviation) comes here as before.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import edge_agent
from edge_agent.cli.main import command_index, command_modules, terminal_columns


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


def make_parser(command: str | None = None) -> argparse.ArgumentParser:
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


def innermost(parser: argparse.ArgumentParser,
              args: argparse.Namespace) -> argparse.ArgumentParser:
    """The parser of the (sub-)sub-command ``args`` were parsed for."""
    for dest in ("command", *SUBCOMMAND_DESTS):
        name = getattr(args, dest, None)
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not isinstance(name, str) or not subs or name not in subs[0].choices:
            continue
        parser = subs[0].choices[name]
    return parser


# dests of the second-level sub-commands, to name "edge-agent buffer export" in messages
SUBCOMMAND_DESTS = ("buffer_op", "keys_command", "command_op", "firmware_command",
                    "modbus_op", "profile_op", "completion_shell", "config_op", "fleet_op")
