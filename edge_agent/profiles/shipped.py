"""Where the device profiles shipped with the agent are: package data of ``device_profiles``.

The one lookup used by the config loader (``profiles_dir`` unset), ``edge-agent scan``, the
simulators and the demo. It works the same from a checkout (editable install) and from the tree
``scripts/install`` lays down, where no source tree exists.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from edge_agent.errors import ConfigError, Problem

PACKAGE = "device_profiles"


def shipped_dir() -> Path:
    """The directory holding the shipped ``*.toml`` profiles; ConfigError if not installed."""
    try:
        root = resources.files(PACKAGE)
    except ModuleNotFoundError:
        root = None
    path = Path(str(root)) if root is not None else None
    if path is None or not path.is_dir():
        raise ConfigError([Problem(PACKAGE, "", "the shipped device profiles are not installed "
                                   "(package 'device_profiles' missing)",
                                   "reinstall edge-agent, or set profiles_dir")])
    return path
