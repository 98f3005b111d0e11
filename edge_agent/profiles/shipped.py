"""Where the device profiles shipped with the agent are: package data of ``device_profiles``.

The one lookup used by the config loader (``profiles_dir`` unset), ``edge-agent scan``, the
simulators and the demo. It works the same from a checkout (editable install) and from the tree
``scripts/install`` lays down, where no source tree exists.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from edge_agent.errors import ConfigError, Problem

PACKAGE = "device_profiles"


def shipped_dir() -> Path:
    """The directory holding the shipped ``*.toml`` profiles; ConfigError if not installed."""
    # the package's directory from its spec: importlib.resources would do too, but it imports
    # tempfile and shutil (~1 MiB the daemon has no other use for)
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ModuleNotFoundError, ValueError):
        spec = None
    where = list(spec.submodule_search_locations or ()) if spec is not None else []
    path = Path(where[0]) if where else None
    if path is None or not path.is_dir():
        raise ConfigError([Problem(PACKAGE, "", "the shipped device profiles are not installed "
                                   "(package 'device_profiles' missing)",
                                   "reinstall edge-agent, or set profiles_dir")])
    return path
