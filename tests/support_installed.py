"""Run what ``scripts/install --root R`` laid down where a box imaged from R has it.

The tree is made for its final place: shebangs, pyvenv.cfg and compiled modules name
/opt/edge-agent/venv, never R, so it does not run at R. ``at_final_place(R)`` is a command prefix
that runs a program in a private mount namespace of its own where R/opt/edge-agent is mounted on
/opt/edge-agent and R/usr/local/bin on /usr/local/bin (needs root, like the unit sandbox harness);
nothing changes on the host. ``names_scratch_root(R)`` lists the files of the installed tree that
still name R (a tree that would only run at R).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

PREFIX = "opt/edge-agent"
FINAL_BIN = "/usr/local/bin"
# inside the namespace: a fresh /opt holding only edge-agent, then the tree and its commands
_MOUNT = (
    'set -e; r="$1"; shift; '
    "mount -t tmpfs -o mode=0755 edge-agent-opt /opt; mkdir /opt/edge-agent; "
    'mount --bind "$r/opt/edge-agent" /opt/edge-agent; '
    'mount --bind "$r/usr/local/bin" /usr/local/bin; '
    'exec "$@"'
)


def installed_unavailable() -> str | None:
    """Why the installed tree cannot be run at its final place here, or None."""
    if os.geteuid() != 0:
        return "running the installed tree at /opt/edge-agent needs root (a mount namespace)"
    if shutil.which("unshare") is None:
        return "unshare is not installed"
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"],
                           capture_output=True, text=True, timeout=10, check=False)
    if probe.returncode != 0:
        return f"no mount namespace here: {probe.stderr.strip()}"
    return None


def at_final_place(root: Path) -> list[str]:
    """Prefix for argv: run it with ``root``'s tree at /opt/edge-agent and /usr/local/bin. The
    program replaces the prefix's processes (exec): its pid is the Popen's, signals reach it."""
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", _MOUNT, "sh",
            str(root)]


def names_scratch_root(root: Path) -> list[Path]:
    """Files under root/opt/edge-agent (links not followed) whose bytes contain root's path."""
    needle = str(root).encode()
    found = []
    for dirpath, _dirs, files in os.walk(root / PREFIX):
        for name in files:
            p = Path(dirpath) / name
            if p.is_symlink():
                if needle in os.fsencode(os.readlink(p)):
                    found.append(p)
                continue
            if needle in p.read_bytes():
                found.append(p)
    return found
