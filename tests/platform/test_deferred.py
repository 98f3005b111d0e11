"""Deferred imports: a module the daemon's libraries import but do not use costs nothing until
used, and is the real module when used."""

from __future__ import annotations

import subprocess
import sys

CHILD = """
import sys
import edge_agent.uplink.mqtt  # paho-mqtt imports urllib.request at module level
print("loaded_at_start", "http.client" in sys.modules or "email.parser" in sys.modules)
import urllib.request
print("works", callable(urllib.request.getproxies), isinstance(urllib.request.getproxies(), dict))
import urllib.request as again
print("real", again is sys.modules["urllib.request"] and again.__spec__ is not None)
"""


def test_urllib_request_loads_only_when_used() -> None:
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                         check=True, timeout=60).stdout.split("\n")
    assert out[:3] == ["loaded_at_start False", "works True True", "real True"]


def test_defer_is_a_no_op_for_a_loaded_module() -> None:
    from edge_agent.platform.deferred import defer

    before = sys.modules["subprocess"]
    defer("subprocess")
    assert sys.modules["subprocess"] is before
