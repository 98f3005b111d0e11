"""Run the CLI as someone else (tests run as root): a throwaway uid with no passwd entry, the way a
technician's shell differs from root's. Needs root; a test using it skips otherwise.

The interpreter may live where only root can read it (a pyenv under /root), so the child starts
as root, imports the CLI and what its commands load lazily, then drops to the uid (setgroups,
setgid, setuid) before running the command: everything the command does, it does as the uid."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest


def free_uid(start: int = 61_000) -> int:
    """A uid (and gid of the same number) nobody on this machine has."""
    uid = start
    while True:
        try:
            pwd.getpwuid(uid)
        except KeyError:
            return uid
        uid += 1


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to a throwaway uid")


PRELOAD = (
    "edge_agent.cli.main", "edge_agent.cli.exporter", "edge_agent.cli.importer",
    "edge_agent.cli.direct", "edge_agent.config.load", "edge_agent.trust.archive",
    "edge_agent.trust.keys", "edge_agent.trust.verify", "edge_agent.platform.clock",
    "edge_agent.control.client", "paho.mqtt.client", "cryptography.x509", "ssl", "ctypes.util",
    "encodings.idna", "base64", "hashlib", "json", "pwd", "grp", "shutil",
    # the serial side (direct reads, scan, modbus, profile new --scan)
    "termios", "fcntl", "serial", "serial.serialposix", "edge_agent.bus.serial_line",
    "edge_agent.bus.serial_port", "edge_agent.bus.at", "edge_agent.bus.at_points",
    "edge_agent.bus.tcp_endpoint", "edge_agent.bus.raw", "edge_agent.cli.raw_client",
    "edge_agent.cli.scan_fit", "edge_agent.cli.profile_draft", "edge_agent.config.catalog",
    "edge_agent.profiles.shipped", "edge_agent.profiles.load", "device_profiles",
    "importlib.resources", "importlib.readers",
    # imported where used (the daemon does without them): a profile's display, suggestions
    "decimal", "difflib", "tempfile",
)
_DROP = """
import importlib, os, sys
for mod in {preload!r}:
    try:
        importlib.import_module(mod)
    except ImportError:  # moved or optional: the command imports what it needs
        pass
from edge_agent.cli.main import build_parser, main
build_parser()  # imports every command module
os.setgroups({groups!r}); os.setgid({uid}); os.setuid({uid})
sys.exit(main({args!r}))
"""


def run_cli_as(uid: int, args: Sequence[str], *, groups: Sequence[int] = (),
               env: dict[str, str] | None = None,
               timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``edge-agent ARGS`` as ``uid`` (primary group ``uid``, plus ``groups``), cwd /."""
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/nonexistent",
            "PYTHONDONTWRITEBYTECODE": "1"}
    code = _DROP.format(preload=PRELOAD, groups=list(groups), uid=uid, args=list(args))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=timeout, check=False, cwd="/", env=base | (env or {}))


@contextmanager
def open_dir() -> Iterator[Path]:
    """A scratch directory others may traverse (pytest's tmp_path is 0700 root's)."""
    path = Path(tempfile.mkdtemp(prefix="edge-agent-test-"))
    try:
        path.chmod(0o755)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def sock_gid(gw: Any) -> int:
    """The group of the gateway's control socket: root's where the test daemon runs as root, the
    edge-agent group where the host has one (the daemon gives the socket that group)."""
    return os.stat(gw.socket_path).st_gid
