"""The control socket server (asyncio). Mode 0660; the group decides who may use the CLI.

The socket listens from the start; what answers a connection -- the line reader, the request
checks, the ops and streams (control/session.py, control/protocol.py) -- is imported at the
first connection: most of a gateway's life nobody is connected (issue #15's memory). Should that
import fail (the tree upgraded in place under a running daemon), every connection still gets one
error line naming why, and the failure is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from edge_agent.platform.files import give_group

if TYPE_CHECKING:
    from edge_agent.control.protocol import ControlTarget

log = logging.getLogger(__name__)

# a client while the handlers cannot be loaded: its request line, then our error line
UNAVAILABLE_READ_S = 1.0
UNAVAILABLE_WRITE_S = 5.0


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
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
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
            try:
                from edge_agent.control.session import Session
            except Exception as exc:  # e.g. a mixed tree after an in-place upgrade
                await self._unavailable(reader, writer, exc)
                return
            await Session(self._target).run(reader, writer, len(self._conns))
        finally:
            self._conns.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    @staticmethod
    async def _unavailable(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                           exc: Exception) -> None:
        detail = f"the control handlers could not be loaded: {type(exc).__name__}: {exc}"
        log.error("control_unavailable err=%r", exc)
        # the client's request first (briefly), as for a busy refusal: it meets our answer, not
        # a broken pipe
        with contextlib.suppress(TimeoutError, ValueError, ConnectionError):
            await asyncio.wait_for(reader.readline(), UNAVAILABLE_READ_S)
        writer.write(json.dumps({"ok": False, "error": "internal", "detail": detail[:500]})
                     .encode() + b"\n")
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.drain(), UNAVAILABLE_WRITE_S)
