"""Modules a library imports but the daemon does not use: loaded on first use, not at start.

``defer("urllib.request")`` puts a stand-in module under that name; the first attribute read on
it imports the real module (which then replaces the stand-in everywhere the import system looks)
and answers from it. So code that imports the module and never touches it costs nothing, and code
that does use it gets the real module, unchanged. The daemon defers ``urllib.request``: paho-mqtt
imports it (and with it ``email``, ``http.client``, ``tempfile``: ~2 MiB resident) at module level
only to read proxy settings, which it does only when PySocks is installed; and ``uuid``, which
paho uses only to make up a client id (the uplink always gives one), and ``platform``, which paho
reads once at import for ``platform.system()`` (the stand-in answers that one from ``os.uname()``,
as ``platform`` does on Linux; any other attribute loads the real module).
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any


class _Deferred(types.ModuleType):
    def __getattr__(self, attr: str) -> Any:
        return getattr(_load(self), attr)


def _load(stub: _Deferred) -> types.ModuleType:
    name = stub.__name__
    if sys.modules.get(name) is stub:
        sys.modules.pop(name, None)  # two threads may both get here
    return importlib.import_module(name)  # binds the real module on its package too


def defer(name: str, **answers: Any) -> None:
    """Stand in for ``name`` (a submodule, e.g. "urllib.request") until it is used; nothing to
    do when it is already imported. ``answers``: attributes the stand-in itself holds (reading
    them does not load the module), each exactly what the real module's would give."""
    if name in sys.modules:
        return
    parent, _, child = name.rpartition(".")
    stub = _Deferred(name)
    for attr, value in answers.items():
        setattr(stub, attr, value)
    stub.__spec__ = None  # the import system then takes the stand-in as loaded
    sys.modules[name] = stub
    if parent:
        setattr(importlib.import_module(parent), child, stub)
