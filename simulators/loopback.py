"""Loopback helpers shared by the demo, the tests and the benchmarks: a free port, waiting for a
listener, where mosquitto is. Lab code (edge-agent-lab): never installed on a gateway."""

from __future__ import annotations

import contextlib
import shutil
import socket
import time
from pathlib import Path

from edge_agent.errors import UplinkError


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(port: int, timeout_s: float = 10.0) -> None:
    """Until something accepts connections on 127.0.0.1:``port``; UplinkError after that."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port),
                                                                    timeout=0.2):
            return
        time.sleep(0.02)
    raise UplinkError(f"nothing listening on 127.0.0.1:{port} after {timeout_s} s")


def mosquitto_path() -> str | None:
    return shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
