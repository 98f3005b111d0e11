"""The control socket listens from the start, its handlers (control/session.py) load at the first
connection; when they cannot be loaded (a tree upgraded in place under the running daemon), a
client still gets one error line saying why, and the daemon logs it."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edge_agent.control.server import ControlServer
from tests.control.test_server import Target, _ask


def test_the_server_alone_holds_no_handler_code() -> None:
    code = ("import sys, edge_agent.control.server; "
            "print([m for m in ('edge_agent.control.session', 'edge_agent.control.protocol') "
            "if m in sys.modules])")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert res.stdout.strip() == "[]"


def test_handlers_that_cannot_be_loaded_still_answer_each_connection(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delitem(sys.modules, "edge_agent.control.session", raising=False)
    monkeypatch.setitem(sys.modules, "edge_agent.control.session", None)  # import fails

    def ask_twice(path: Path) -> list[dict[str, Any]]:
        out = []
        for _ in range(2):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(10)
                s.connect(str(path))
                s.sendall(b'{"op": "status"}\n')
                with s.makefile("rb") as f:
                    out.append(json.loads(f.readline()))
                    assert f.readline() == b""  # then closed
        return out

    async def main() -> list[dict[str, Any]]:
        server = ControlServer(tmp_path / "control.sock", Target())
        await server.start()
        try:
            return await asyncio.to_thread(ask_twice, tmp_path / "control.sock")
        finally:
            await server.stop()

    with caplog.at_level(logging.ERROR, logger="edge_agent.control.server"):
        replies = asyncio.run(main())
    assert [r["error"] for r in replies] == ["internal", "internal"]
    assert all(r["ok"] is False and "could not be loaded: ModuleNotFoundError" in r["detail"]
               for r in replies)
    assert len([r for r in caplog.records if "control_unavailable" in r.getMessage()]) == 2


def test_once_loaded_the_handlers_answer(tmp_path: Path) -> None:
    async def main() -> list[dict[str, Any]]:
        server = ControlServer(tmp_path / "control.sock", Target())
        await server.start()
        try:
            return await asyncio.to_thread(_ask, tmp_path / "control.sock",
                                           [b'{"op": "status"}\n', b'{"op": "buffer"}\n'])
        finally:
            await server.stop()

    replies = asyncio.run(main())
    assert replies[0]["result"]["gateway_id"] == "gw" and replies[1]["result"] == {"depth": 0}
