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


PAHO_CHILD = """
import sys
import edge_agent.uplink.mqtt  # paho-mqtt imports uuid and platform at module level
print("loaded_at_start", "_uuid" in sys.modules, type(sys.modules["platform"]).__name__)
import platform
system = platform.system()
print("still_deferred", type(sys.modules["platform"]).__name__)
machine = platform.machine()  # any other attribute: the real module
print("real", type(sys.modules["platform"]).__name__, sys.modules["platform"].system() == system)
import uuid
print("uuid", len(uuid.uuid4().hex), "_uuid" in sys.modules or "uuid" in sys.modules)
"""


def test_paho_uuid_and_platform_load_only_when_used() -> None:
    out = subprocess.run([sys.executable, "-c", PAHO_CHILD], capture_output=True, text=True,
                         check=True, timeout=60).stdout.split("\n")
    assert out[:4] == ["loaded_at_start False _Deferred", "still_deferred _Deferred",
                       "real module True", "uuid 32 True"]
