"""The control socket of a running scenario: JSON lines over a Unix socket in the run directory.

One request per line, one answer per line::

    {"op": "fault", "device": "lamp-03", "kind": "dead", "seconds": 30}
    {"op": "fault", "endpoint": "pole-03", "kind": "stall"}
    {"op": "reboot", "device": "meter-02"}
    {"op": "event", "device": "lamp-01", "name": "door"}
    {"op": "set", "device": "manhole-02", "key": "rain_mm_h", "value": 20}
    {"op": "status"}
    -> {"ok": true, ...} | {"ok": false, "error": "..."}

The socket is created with mode 0600: only the user running the scenario can drive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from pathlib import Path
from typing import Any

from .scenario import Scenario

log = logging.getLogger(__name__)

SOCKET_NAME = "control.sock"
MAX_LINE = 64 * 1024


def default_run_dir() -> Path:
    base = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/edge-sim-{os.getuid()}"
    return Path(base) / "edge-sim"


async def handle(scenario: Scenario, request: dict[str, Any]) -> dict[str, Any]:
    """Execute one control request against ``scenario``."""
    op = request.get("op")
    seconds = request.get("seconds")
    if seconds is not None and (not isinstance(seconds, int | float) or seconds <= 0):
        raise ValueError(f"seconds must be a positive number, got {seconds!r}")
    if op == "fault" and "endpoint" in request:
        await scenario.endpoint_fault(str(request["endpoint"]), str(request.get("kind", "none")),
                                      seconds=seconds)
        return {"ok": True}
    if op == "fault":
        scenario.fault(str(request["device"]), str(request.get("kind", "none")), seconds=seconds,
                       slow_s=request.get("slow_s"), exception_code=request.get("exception_code"))
        return {"ok": True}
    if op == "reboot":
        scenario.reboot(str(request["device"]))
        return {"ok": True}
    if op == "event":
        scenario.event(str(request["device"]), str(request["name"]), seconds)
        return {"ok": True}
    if op == "set":
        value = request.get("value")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"value must be a number, got {value!r}")
        scenario.set_param(str(request["device"]), str(request["key"]), float(value))
        return {"ok": True}
    if op == "status":
        return {"ok": True, **scenario.status()}
    raise ValueError(f"unknown op {op!r} (fault, reboot, event, set, status)")


class ControlServer:
    def __init__(self, scenario: Scenario, run_dir: Path) -> None:
        self.scenario = scenario
        self.path = run_dir / SOCKET_NAME
        self._server: asyncio.AbstractServer | None = None
        self._clients: set[asyncio.Task[Any]] = set()

    async def start(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # a stale socket of a crashed run
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._client, path=str(self.path),
                                                           limit=MAX_LINE)
        finally:
            os.umask(old)
        log.info("sim_control_listening path=%s", self.path)
        return self.path

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            for task in list(self._clients):
                task.cancel()
            await asyncio.gather(*self._clients, return_exceptions=True)
            await server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._clients.add(task)
        try:
            while line := await reader.readline():
                writer.write(json.dumps(await self._answer(line)).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, ValueError) as exc:  # ValueError: line over the limit
            log.warning("sim_control_client_error err=%s", exc)
        except asyncio.CancelledError:
            pass  # the scenario is stopping
        finally:
            writer.close()
            if task is not None:
                self._clients.discard(task)

    async def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("a request is a JSON object")
            answer = await handle(self.scenario, request)
        except (ValueError, KeyError, TypeError) as exc:
            why = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
            log.info("sim_control_refused request=%r err=%s", line[:200], why)
            return {"ok": False, "error": why}
        log.info("sim_control op=%s", request.get("op"))
        return answer


def send(run_dir: Path, request: dict[str, Any], timeout_s: float = 5.0) -> dict[str, Any]:
    """Send one request to the scenario running with ``run_dir``; returns its answer."""
    path = run_dir / SOCKET_NAME
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise ConnectionError(f"no scenario running with control socket {path}: {exc}") \
                from None
        sock.sendall(json.dumps(request).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    answer = json.loads(data) if data else {"ok": False, "error": "no answer"}
    if not isinstance(answer, dict):
        raise ConnectionError(f"bad answer from {path}: {data[:200]!r}")
    return answer
