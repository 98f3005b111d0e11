"""One control connection, answered (control/server.py imports this module at the first
connection: a daemon nobody talks to does not hold the code, issue #15's memory).

Whatever a client sends, it gets an answer (protocol.py): an over-long or too deeply nested line
is refused before it is parsed, a malformed or ill-typed request is refused by name, and any
exception an op raises (typed refusals, OSError, a bug) becomes one error reply and one log line.
The connection stays open for the next request; a stream that fails ends with an error line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import traceback
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from edge_agent.control.protocol import (
    MAX_CONNECTIONS,
    MAX_DEPTH,
    MAX_LINE,
    STREAMS,
    ControlTarget,
    RequestError,
    check_request,
    reading_json,
    too_deep,
)
from edge_agent.errors import BoundsError, BusTimeout, CodecError, CommandRefused, EdgeAgentError

log = logging.getLogger("edge_agent.control.server")  # the server's log lines, as before

DRAIN_TIMEOUT_S = 60.0  # a client that stops reading a stream this long is dropped
BUSY_READ_S = 1.0  # how long a refused (busy) connection may take to send its request
_CHUNK = 64 * 1024


class _TooLong:
    """Marker: the line went over MAX_LINE (its rest is being skipped)."""


class ClientStalled(EdgeAgentError):
    """The client did not read what we sent for DRAIN_TIMEOUT_S: the connection is dropped."""


TOO_LONG = _TooLong()


class LineReader:
    """Lines of at most ``limit`` bytes from a stream; a longer line is reported once
    (``TOO_LONG``) and skipped up to its newline without being kept in memory."""

    def __init__(self, reader: asyncio.StreamReader, limit: int = MAX_LINE) -> None:
        self._reader = reader
        self._limit = limit
        self._buf = bytearray()
        self._skipping = False

    async def next(self) -> bytes | _TooLong | None:
        """The next line (without its newline), TOO_LONG as soon as a line overruns, or None at
        end of stream."""
        while True:
            i = self._buf.find(b"\n")
            if i >= 0:
                line = bytes(self._buf[:i])
                del self._buf[: i + 1]
                if self._skipping:
                    self._skipping = False
                    continue
                return line
            if self._skipping:
                self._buf.clear()
            elif len(self._buf) > self._limit:
                self._buf.clear()
                self._skipping = True
                return TOO_LONG
            chunk = await self._reader.read(_CHUNK)
            if not chunk:
                if self._buf and not self._skipping:
                    line = bytes(self._buf)
                    self._buf.clear()
                    return line
                return None
            self._buf += chunk


async def _aclose(it: AsyncIterator[Any]) -> None:
    """Close an async generator now (its finally blocks run here, not at garbage collection)."""
    aclose = getattr(it, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()


def error_reply(op: str, exc: BaseException, quiet: bool = False) -> dict[str, Any]:
    """One error reply for whatever ``op`` raised, logged once (a refusal at info, an OS error
    at warning, anything unexpected at error with the place it was raised); ``quiet``: an
    expected outcome counted elsewhere (a scan's absent unit), not logged."""
    if isinstance(exc, CommandRefused):  # RequestError included
        code, detail = exc.reason, exc.detail
    elif isinstance(exc, BoundsError):
        code, detail = "out_of_bounds", str(exc)
    elif isinstance(exc, CodecError):  # a value the point's type cannot take
        code, detail = "bad_value", str(exc)
    elif isinstance(exc, EdgeAgentError):
        code, detail = type(exc).__name__, str(exc)
    elif isinstance(exc, TimeoutError):
        code, detail = "timeout", str(exc) or "the op did not finish in time"
    elif isinstance(exc, OSError):
        code = ("not_found" if isinstance(exc, FileNotFoundError) else
                "permission_denied" if isinstance(exc, PermissionError) else "os_error")
        detail = f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
    else:
        code, detail = "internal", f"{type(exc).__name__}: {exc}"
    if code == "internal":
        frames = traceback.extract_tb(exc.__traceback__)
        where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"
        log.error("control_op_failed op=%s error=internal exc=%r at=%s", op, exc, where)
    elif isinstance(exc, OSError):
        log.warning("control_op_failed op=%s error=%s detail=%s", op, code, detail)
    elif not quiet:
        log.info("control_op_refused op=%s error=%s detail=%s", op, code, detail[:200])
    return {"ok": False, "error": code, "detail": detail}


class Session:
    """One connection: its requests answered in turn, and what it did that is logged once when
    it ends (the unit ids a scan probed per bus and those that answered, instead of a line per
    absent unit)."""

    def __init__(self, target: ControlTarget) -> None:
        self._target = target
        self.probes: dict[str, tuple[set[int], set[int]]] = {}

    def probed(self, bus: str, unit: int, answered: bool) -> None:
        tried, heard = self.probes.setdefault(bus, (set(), set()))
        tried.add(unit)
        if answered:
            heard.add(unit)

    def log(self) -> None:
        for bus, (tried, heard) in self.probes.items():
            log.info("modbus_scan bus=%s probed=%d answered=%d absent=%d", bus, len(tried),
                     len(heard), len(tried - heard))

    async def run(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                  connections: int) -> None:
        """Answer until the client goes; ``connections`` open with this one (over
        MAX_CONNECTIONS: answered busy and closed)."""
        try:
            if connections > MAX_CONNECTIONS:
                log.warning("control_busy connections=%d", connections)
                # take the client's first line (briefly) before answering and closing: a client
                # that sends its request meets our answer, not a broken pipe
                with contextlib.suppress(TimeoutError, ValueError):
                    await asyncio.wait_for(reader.readline(), BUSY_READ_S)
                await self._reply(writer, {"ok": False, "error": "busy", "detail":
                                           f"{MAX_CONNECTIONS} control connections already open"})
                return
            lines = LineReader(reader)
            while True:
                line = await lines.next()
                if line is None:
                    return
                if not await self._request(line, writer):
                    return
        except (ConnectionError, ClientStalled, asyncio.CancelledError):
            pass
        finally:
            self.log()

    async def _request(self, line: bytes | _TooLong, writer: asyncio.StreamWriter) -> bool:
        """Answer one request line; False when the connection should end (after a stream)."""
        op = "?"
        probe: tuple[str, int] | None = None  # a scan's (bus, unit): counted, not logged
        try:
            if isinstance(line, _TooLong):
                raise RequestError("request_too_long", f"request line over {MAX_LINE} bytes")
            if too_deep(line):
                raise RequestError("too_deep", f"JSON nested deeper than {MAX_DEPTH} levels")
            try:
                raw = json.loads(line)
            except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
                raise RequestError("bad_request", f"not JSON: {exc}"[:300]) from None
            if isinstance(raw, dict) and isinstance(raw.get("op"), str):
                op = raw["op"][:64]
            req = check_request(raw)
            if req["op"] in STREAMS:
                await self._stream(req, writer)
                return False
            if req["op"] == "modbus" and req.get("probe") and req.get("values") is None:
                probe = (req["bus"][:64], req["unit"])
            reply = await self._dispatch(req)
            if probe is not None:
                self.probed(*probe, answered=True)
        except (ConnectionError, ClientStalled, asyncio.CancelledError):
            raise
        except Exception as exc:
            absent = probe is not None and isinstance(exc, BusTimeout)
            if probe is not None:
                self.probed(*probe, answered=False)
            reply = error_reply(op, exc, quiet=absent)
        await self._reply(writer, reply)
        return True

    async def _reply(self, writer: asyncio.StreamWriter, obj: dict[str, Any]) -> None:
        try:
            data = json.dumps(obj, default=str).encode() + b"\n"
        except (TypeError, ValueError) as exc:  # a result that is not JSON-able: a bug
            data = json.dumps(error_reply(str(obj.get("op", "?")), exc)).encode() + b"\n"
        writer.write(data)
        try:
            await asyncio.wait_for(writer.drain(), DRAIN_TIMEOUT_S)
        except TimeoutError:
            raise ClientStalled from None

    async def _dispatch(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req["op"]
        t = self._target
        if op == "status":
            return {"ok": True, "result": t.status()}
        if op == "devices":
            return {"ok": True, "result": t.devices()}
        if op == "catalog":
            return {"ok": True, "result": t.catalog()}
        if op == "modbus":
            return {"ok": True, "result": await t.modbus(
                req["bus"], req["unit"], req["table"], req["address"], req.get("count"),
                req.get("values"), req.get("timeout"), bool(req.get("probe")))}
        if op == "read":  # quality: each point's {value, quality, reason} as the poller judged
            read = t.read_judged if req.get("quality") else t.read_now
            return {"ok": True, "result": await read(req["device"], req.get("point"))}
        if op == "write":
            value = await t.local_write(req["device"], req["point"], req["value"])
            return {"ok": True, "result": {"confirmed": value}}
        if op == "buffer":
            return {"ok": True, "result": t.buffer_stats()}
        if op == "command_results":
            return {"ok": True, "result": t.command_results(req.get("id"), req.get("recent") or 20)}
        if op == "config_state":
            return {"ok": True, "result": t.config_state()}
        if op == "config_pin":
            return {"ok": True, "result": await t.config_pin(req["pin"], req.get("reason") or "")}
        raise RequestError("unknown_op", op)  # an op in OPS without a handler: a bug

    async def _stream(self, req: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        """Send a stream's lines as they come, each after the previous one drained; an error
        half-way is sent as the stream's last line."""
        source = (self._tail(req) if req["op"] == "tail"
                  else self._target.export(req.get("after_seq") or 0))
        try:
            async for msg in source:
                await self._reply(writer, msg)
        except (ConnectionError, ClientStalled, asyncio.CancelledError):
            raise
        except Exception as exc:
            await self._reply(writer, error_reply(req["op"], exc))
        finally:
            await _aclose(source)

    async def _tail(self, req: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        want_dev, want_pt, want_cls = req.get("device"), req.get("point"), req.get("class")
        classes = self._check_tail_names(want_dev, want_pt, want_cls)
        yield {"ok": True, "stream": True}
        readings = self._target.subscribe()
        try:
            async for r in readings:
                if want_dev and r.device != want_dev:
                    continue
                if want_pt and r.point != want_pt:
                    continue
                if want_cls and classes.get(r.device) != want_cls:
                    continue
                yield {"reading": reading_json(r)}
        finally:
            await _aclose(readings)

    def _check_tail_names(self, device: str | None, point: str | None,
                          cls: str | None) -> dict[str, str]:
        """Device -> class; CommandRefused (unknown_device / unknown_point / unknown_class)
        for a name the running config does not know, no_match for filters that select nothing
        together: a filter that can never match would otherwise wait forever."""
        devices = self._target.catalog()["devices"]
        classes = {d["name"]: d["class"] for d in devices}
        if device and device not in classes:
            raise CommandRefused("unknown_device", device)
        if cls and cls not in classes.values():
            raise CommandRefused("unknown_class", cls)
        if device and cls and classes[device] != cls:
            raise CommandRefused("no_match", f"{device} is a {classes[device]}, not a {cls}")
        if point:
            scope = [d for d in devices if (not device or d["name"] == device)
                     and (not cls or d["class"] == cls)]
            if not any(p["name"] == point for d in scope for p in d["points"]):
                raise CommandRefused("unknown_point", f"{device}.{point}" if device else point)
        return classes
