"""Entry point of `edge-agent`. Every module ``edge_agent/cli/cmd_*.py`` exposes

    def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None

which adds its sub-command(s) and sets ``func`` (``(args) -> int`` exit status) on each parser.
Modules are discovered, so adding a command touches no shared file.

Only the module of the command being run is imported: each module's source is read (not
imported) for its ``sub.add_parser("NAME"`` calls, so `edge-agent run` (the daemon) and
`edge-agent status` load what they need and not every other command's dependencies. Help, no
command, or a name the scan does not find (e.g. a computed one) import every module: the index
only ever saves work, it never decides what exists.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

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


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser with every command, or only ``command``'s module when the index knows it."""
    parser = argparse.ArgumentParser(
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


def main(argv: Sequence[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_command(args_in))
    args = parser.parse_args(args_in)
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return func(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
