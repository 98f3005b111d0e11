"""Blocking client for the control socket, used by the CLI."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edge_agent.errors import EdgeAgentError


class ControlUnavailable(EdgeAgentError):
    """The daemon is not running (or the socket is not accessible)."""


class ControlClient:
    def __init__(self, path: Path, timeout_s: float = 5.0) -> None:
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout_s)
        try:
            self._sock.connect(str(path))
        except OSError as exc:
            self._sock.close()
            raise ControlUnavailable(f"cannot reach the daemon at {path}: {exc}") from exc
        self._file = self._sock.makefile("rb")

    def call(self, op: str, *, timeout_s: float | None = None, **args: Any) -> dict[str, Any]:
        """One request/reply. ``timeout_s`` overrides the connection's (reads and writes wait
        for the device, queries answer at once)."""
        if timeout_s is not None:
            self._sock.settimeout(timeout_s)
        self._sock.sendall(json.dumps({"op": op, **args}).encode() + b"\n")
        line = self._file.readline()
        if not line:
            raise ControlUnavailable("daemon closed the connection")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def stream(self, op: str, **args: Any) -> Iterator[dict[str, Any]]:
        head = self.call(op, **args)
        if not head.get("ok"):
            raise ControlUnavailable(str(head))
        self._sock.settimeout(None)
        for line in self._file:
            yield json.loads(line)

    def close(self) -> None:
        self._file.close()
        self._sock.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
