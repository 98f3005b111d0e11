"""The control socket server (asyncio). Mode 0660; the group decides who may use the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from edge_agent.control.protocol import MAX_LINE, ControlTarget, reading_json
from edge_agent.errors import BoundsError, BusError, CodecError, CommandRefused, EdgeAgentError
from edge_agent.platform.files import give_group

log = logging.getLogger(__name__)


class ControlServer:
    def __init__(self, path: Path, target: ControlTarget, group: str | None = None) -> None:
        self.path = path
        self._target = target
        self._group = group
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # a stale socket from a crash
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path),
                                                       limit=MAX_LINE)
        os.chmod(self.path, 0o660)
        if self._group:  # under the unit the socket has the group already: no chown at all
            give_group(self.path, self._group)
        log.info("control_listening path=%s", self.path)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for t in list(self._conns):
                t.cancel()
            await asyncio.gather(*self._conns, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        try:
            while True:
                try:
                    line = await reader.readline()
                except ValueError:  # line over the limit
                    await self._reply(writer, {"ok": False, "error": "request_too_long"})
                    return
                if not line:
                    return
                try:
                    req = json.loads(line)
                    if not isinstance(req, dict) or not isinstance(req.get("op"), str):
                        raise ValueError("request must be an object with a string 'op'")
                except ValueError as exc:
                    await self._reply(writer, {"ok": False, "error": "bad_request",
                                               "detail": str(exc)})
                    continue
                if req["op"] == "tail":
                    await self._tail(req, writer)
                    return
                await self._reply(writer, await self._dispatch(req))
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._conns.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _reply(self, writer: asyncio.StreamWriter, obj: dict[str, Any]) -> None:
        writer.write(json.dumps(obj, default=str).encode() + b"\n")
        await writer.drain()

    async def _dispatch(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req["op"]
        t = self._target
        try:
            if op == "status":
                return {"ok": True, "result": t.status()}
            if op == "devices":
                return {"ok": True, "result": t.devices()}
            if op == "read":
                return {"ok": True, "result": await t.read_now(str(req["device"]),
                                                               req.get("point"))}
            if op == "write":
                value = await t.local_write(str(req["device"]), str(req["point"]), req["value"])
                return {"ok": True, "result": {"confirmed": value}}
            if op == "buffer":
                return {"ok": True, "result": t.buffer_stats()}
            if op == "buffer_export":
                return {"ok": True, "result": await t.buffer_export(str(req["dir"]))}
            return {"ok": False, "error": "unknown_op", "detail": op}
        except KeyError as exc:
            return {"ok": False, "error": "bad_request", "detail": f"missing or unknown {exc}"}
        except CommandRefused as exc:
            return {"ok": False, "error": exc.reason, "detail": exc.detail}
        except BoundsError as exc:
            return {"ok": False, "error": "out_of_bounds", "detail": str(exc)}
        except CodecError as exc:
            return {"ok": False, "error": "not_writable", "detail": str(exc)}
        except (BusError, EdgeAgentError) as exc:
            return {"ok": False, "error": type(exc).__name__, "detail": str(exc)}

    async def _tail(self, req: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        await self._reply(writer, {"ok": True, "stream": True})
        want_dev, want_pt, want_cls = req.get("device"), req.get("point"), req.get("class")
        classes = self._device_classes() if want_cls else {}
        async for r in self._target.subscribe():
            if want_dev and r.device != want_dev:
                continue
            if want_pt and r.point != want_pt:
                continue
            if want_cls and classes.get(r.device) != want_cls:
                continue
            await self._reply(writer, {"reading": reading_json(r)})

    def _device_classes(self) -> dict[str, str]:
        return {d["name"]: d.get("class", "") for d in self._target.devices()}
