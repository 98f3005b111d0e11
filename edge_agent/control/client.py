"""Clients of the control socket, used by the CLI: ``ControlClient`` blocks (one request at a
time, what most commands need); ``AsyncControlClient`` waits inside an event loop, so a command
running many requests from a coroutine (``scan`` through the daemon) stops at once on Ctrl-C."""

from __future__ import annotations

import asyncio
import errno
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

from edge_agent.errors import CommandRefused, EdgeAgentError


class ControlUnavailable(EdgeAgentError):
    """The daemon is not running (or the socket is not accessible), or it went away."""


class DaemonNotRunning(ControlUnavailable):
    """Nothing listens at the socket path (no socket file, or a stale one)."""


class ControlNotPermitted(ControlUnavailable):
    """The socket is there but this user may not connect (not in the socket's group)."""


class ControlRefused(CommandRefused):
    """The daemon answered {"ok": false, "error": code, "detail": ...} (``reason`` is the code)."""


def _unreachable(path: Path, exc: OSError) -> NoReturn:
    msg = f"cannot reach the daemon at {path}: {exc.strerror or exc}"
    if exc.errno in (errno.EACCES, errno.EPERM):
        raise ControlNotPermitted(msg) from exc
    if exc.errno in (errno.ENOENT, errno.ECONNREFUSED):
        raise DaemonNotRunning(msg) from exc
    raise ControlUnavailable(msg) from exc


def _reply(line: bytes) -> dict[str, Any]:
    if not line:
        raise ControlUnavailable("the daemon closed the connection")
    try:
        reply = json.loads(line)
    except ValueError as exc:
        raise ControlUnavailable(f"the daemon sent a malformed line: {exc}") from None
    if not isinstance(reply, dict):
        raise ControlUnavailable("the daemon sent a line that is not a JSON object")
    return reply


def _result(reply: dict[str, Any]) -> Any:
    if not reply.get("ok"):
        raise ControlRefused(str(reply.get("error", "error")), str(reply.get("detail", "")))
    return reply.get("result")


class ControlClient:
    def __init__(self, path: Path, timeout_s: float = 5.0) -> None:
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout_s)
        try:
            self._sock.connect(str(path))
        except OSError as exc:
            self._sock.close()
            _unreachable(path, exc)
        self._file = self._sock.makefile("rb")

    def _read(self) -> dict[str, Any]:
        return _reply(self._file.readline())

    def call(self, op: str, *, timeout_s: float | None = None, **args: Any) -> dict[str, Any]:
        """One request, its raw reply. ``timeout_s`` overrides the connection's (reads and
        writes wait for the device, queries answer at once)."""
        if timeout_s is not None:
            self._sock.settimeout(timeout_s)
        try:
            self._sock.sendall(json.dumps({"op": op, **args}).encode() + b"\n")
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise ControlUnavailable(f"the daemon closed the connection: {exc}") from None
        return self._read()

    def result(self, op: str, *, timeout_s: float | None = None, **args: Any) -> Any:
        """The result of ``op``; ControlRefused when the daemon answered with an error."""
        return _result(self.call(op, timeout_s=timeout_s, **args))

    def stream(self, op: str, *, timeout_s: float | None = None,
               **args: Any) -> Iterator[dict[str, Any]]:
        """The stream's head (first item), then its items. ``timeout_s`` bounds the wait for
        each line (None: wait as long as it takes, e.g. ``tail`` on a quiet bus). An error line
        raises ControlRefused."""
        head = self.call(op, **args)
        if not head.get("ok"):
            raise ControlRefused(str(head.get("error", "error")), str(head.get("detail", "")))
        yield head
        self._sock.settimeout(timeout_s)
        while True:
            msg = self._read()
            if msg.get("ok") is False:
                raise ControlRefused(str(msg.get("error", "error")), str(msg.get("detail", "")))
            yield msg

    def close(self) -> None:
        self._file.close()
        self._sock.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncControlClient:
    """One connection used from a coroutine: connected at the first request, each answer awaited
    (a cancelled task, e.g. Ctrl-C under ``asyncio.run``, stops waiting at once and the
    connection is closed). Errors as ``ControlClient``'s; TimeoutError when no answer came in
    ``timeout_s``."""

    def __init__(self, path: Path, timeout_s: float = 5.0) -> None:
        self.path = path
        self._timeout_s = timeout_s
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_unix_connection(str(self.path)), self._timeout_s)
            except OSError as exc:
                _unreachable(self.path, exc)
            self._reader, self._writer = reader, writer
            return reader, writer
        return self._reader, self._writer

    async def result(self, op: str, *, timeout_s: float | None = None, **args: Any) -> Any:
        """The result of ``op``; ControlRefused when the daemon answered with an error."""
        reader, writer = await self._connect()
        try:
            writer.write(json.dumps({"op": op, **args}).encode() + b"\n")
            await writer.drain()
            line = await asyncio.wait_for(reader.readline(), timeout_s or self._timeout_s)
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            await self.close()
            raise ControlUnavailable(f"the daemon closed the connection: {exc}") from None
        except BaseException:  # cancelled or timed out half-way: the stream is out of step
            await self.close()
            raise
        if not line:
            await self.close()
        return _result(_reply(line))

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass
