"""Where the node's MicroPython sources are: package data of ``firmware_bridge`` (``node/``).

The one lookup used by `edge-agent firmware bundle` and the tests. It works the same from a
checkout (editable install) and from the tree ``scripts/install`` lays down, where no source tree
exists. The files are data, never imported by CPython (they import ``machine``, ``micropython``):
``firmware_bridge/node`` has no ``__init__.py`` and nothing in edge_agent imports it.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from edge_agent.errors import ConfigError, Problem

PACKAGE = "firmware_bridge"
NODE_FILES = ("crc16.py", "regmap.py", "modbus_slave.py", "node.py", "main.py")


def node_dir() -> Path:
    """The directory holding the node sources (NODE_FILES); ConfigError naming what is missing."""
    path = Path(str(resources.files(PACKAGE) / "node"))
    missing = [name for name in NODE_FILES if not (path / name).is_file()]
    if missing:
        raise ConfigError([Problem(str(path), "", "the node sources are not installed "
                                   f"({', '.join(missing)} missing)", "reinstall edge-agent")])
    return path
