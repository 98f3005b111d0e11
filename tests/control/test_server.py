"""The control server answers everything: hostile lines, failing ops and bugs become one error
reply each; the export stream pages the outbox with backpressure and stops when the client goes."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from edge_agent.control.protocol import MAX_DEPTH, MAX_LINE, check_request, too_deep
from edge_agent.control.server import ControlServer
from edge_agent.errors import CommandRefused, CommandStoreError
from edge_agent.outbox.records import StoredBatch
from edge_agent.outbox.store import Outbox
from edge_agent.readings import Reading, Value
from edge_agent.service.export import PAGE, export_stream
from edge_agent.trust.batch import BatchSigner
from tests.trust.helpers import build_chain, fixed_key


class Target:
    """A daemon stand-in whose ops fail in every way an op can."""

    def __init__(self, outbox: Outbox | None = None) -> None:
        self.outbox = outbox
        self.pages: list[int] = []  # rows returned by each outbox page read
        self.export_closed = asyncio.Event()

    def status(self) -> dict[str, Any]:
        return {"gateway_id": "gw", "odd": object()}  # not JSON: sent as its str()

    def devices(self) -> list[dict[str, Any]]:
        raise ZeroDivisionError("a bug")

    async def modbus(self, bus: str, unit: int, table: str, address: int, count: int | None,
                     values: list[int] | None, timeout: float | None,
                     probe: bool) -> dict[str, Any]:
        raise CommandRefused("unknown_bus", bus)

    def catalog(self) -> dict[str, Any]:
        return {"devices": [{"name": "d", "class": "generic", "points": [{"name": "p"}]}],
                "buses": [], "classes": ["generic"]}

    async def read_now(self, device: str, point: str | None = None) -> dict[str, Value]:
        if device == "missing":
            raise FileNotFoundError(2, "No such file or directory", "/var/lib/x")
        if device == "slow":
            raise TimeoutError
        raise CommandRefused("unknown_device", device)

    async def read_judged(self, device: str, point: str | None = None) -> dict[str, Any]:
        return {k: {"value": v, "quality": "good", "reason": ""}
                for k, v in (await self.read_now(device, point)).items()}

    async def local_write(self, device: str, point: str, value: Value) -> Value:
        raise PermissionError(13, "Permission denied", "/dev/ttyUSB0")

    async def subscribe(self) -> AsyncIterator[Reading]:
        while True:
            await asyncio.sleep(0.01)
            yield Reading("d", "p", 1, "", 0, 0)

    def buffer_stats(self) -> dict[str, Any]:
        return {"depth": 0}

    def command_results(self, cmd_id: str | None, recent: int) -> list[dict[str, Any]]:
        raise CommandStoreError("/var/lib/edge-agent/command_results.db: file is not a database")

    def config_state(self) -> dict[str, Any]:
        return {"pinned": False}

    async def config_pin(self, pin: bool, reason: str = "") -> dict[str, Any]:
        raise OSError(30, "Read-only file system", "/var/lib/edge-agent/config")

    async def export(self, after_seq: int = 0) -> AsyncIterator[dict[str, Any]]:
        assert self.outbox is not None
        box = self.outbox
        real = box.pending

        def spy(after_seq: int = 0, limit: int = 100) -> list[StoredBatch]:
            page = real(after_seq, limit)
            self.pages.append(len(page))
            return page

        box.pending = spy  # type: ignore[method-assign]
        try:
            async for msg in export_stream(box, "gw", after_seq):
                yield msg
        finally:
            box.pending = real  # type: ignore[method-assign]
            self.export_closed.set()


def _ask(path: Path, lines: list[bytes], timeout: float = 10.0) -> list[dict[str, Any]]:
    """Send raw lines on one connection; one decoded reply per line."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        f = s.makefile("rb")
        out = []
        for line in lines:
            s.sendall(line)
            out.append(json.loads(f.readline()))
        f.close()
        return out


async def _serve(tmp_path: Path, target: Target) -> ControlServer:
    server = ControlServer(tmp_path / "control.sock", target)
    await server.start()
    return server


def test_depth_and_request_checks() -> None:
    assert not too_deep(b'{"op": "read", "device": "[[[[[[[[[[[[[[[[[["}')
    assert too_deep(b"[" * 60_000)
    assert too_deep(b'{"a":' * (MAX_DEPTH + 1) + b"1" + b"}" * (MAX_DEPTH + 1))
    assert not too_deep(b'{"a":' * MAX_DEPTH + b"1" + b"}" * MAX_DEPTH)
    assert check_request({"op": "read", "device": "x", "point": None}) == {"op": "read",
                                                                           "device": "x"}
    for bad, code in (([], "bad_request"), ({"op": 1}, "bad_request"), ({"op": "x"}, "unknown_op"),
                      ({"op": "read"}, "bad_argument"), ({"op": "read", "device": 5},
                                                         "bad_argument"),
                      ({"op": "export", "after_seq": True}, "bad_argument"),
                      ({"op": "export", "dir": "/etc"}, "bad_argument")):
        with pytest.raises(Exception) as ei:
            check_request(bad)
        assert getattr(ei.value, "code", None) == code, bad


def test_every_hostile_line_and_failing_op_is_answered(tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        server = await _serve(tmp_path, Target())
        sock = tmp_path / "control.sock"
        try:
            lines = [
                b"[" * 60_000 + b"\n",  # RecursionError in json.loads before
                b"\xff\xfe\x00binary\n",
                b"{not json\n",
                b"\n",
                b'"just a string"\n',
                b'{"op": 42}\n',
                b'{"op": "format_disk"}\n',
                b'{"op": "read", "device": ["x"]}\n',
                b'{"op": "read", "device": "x", "extra": 1}\n',
                b'{"op": "write", "device": "d", "point": "p"}\n',
                b'{"op": "read", "device": "missing"}\n',  # FileNotFoundError
                b'{"op": "read", "device": "slow"}\n',  # TimeoutError
                b'{"op": "write", "device": "d", "point": "p", "value": 1}\n',  # PermissionError
                b'{"op": "devices"}\n',  # a bug
                b'{"op": "read", "device": "nope"}\n',  # a typed refusal
                b'{"op": "buffer_export", "dir": "/var/lib/edge-agent"}\n',  # the old op
                b'{"op": "status"}\n',
            ]
            replies = await asyncio.to_thread(_ask, sock, lines)
            codes = [r.get("error") for r in replies]
            assert codes == [
                "too_deep", "bad_request", "bad_request", "bad_request", "bad_request",
                "bad_request", "unknown_op", "bad_argument", "bad_argument", "bad_argument",
                "not_found", "timeout", "permission_denied", "internal", "unknown_device",
                "unknown_op", None]
            assert all(r["ok"] is False and r["detail"] for r in replies[:-1])
            assert replies[10]["detail"] == "No such file or directory: /var/lib/x"
            assert "ZeroDivisionError: a bug" in replies[13]["detail"]
            assert replies[-1]["ok"] is True and replies[-1]["result"]["gateway_id"] == "gw"
            # over-long lines: refused as soon as they overrun, then skipped; same connection
            huge = b'{"op": "status", "pad": "' + b"x" * (4 * MAX_LINE) + b'"}\n'
            r = await asyncio.to_thread(_ask, sock, [huge, b'{"op": "buffer"}\n'])
            assert r[0]["error"] == "request_too_long" and r[1]["result"] == {"depth": 0}
            r = await asyncio.to_thread(_ask, sock, [
                b'{"op": "command_results", "recent": "5"}\n',
                b'{"op": "command_results", "id": "ab"}\n'])
            assert [x["error"] for x in r] == ["bad_argument", "CommandStoreError"]
            assert "command_results.db" in r[1]["detail"]
        finally:
            await server.stop()

    with caplog.at_level(logging.INFO, logger="edge_agent.control.server"):
        asyncio.run(main())
    bug = [r.getMessage() for r in caplog.records if "error=internal" in r.getMessage()]
    assert len(bug) == 1 and "at=test_server.py:" in bug[0], bug  # once, with where


def test_connection_limit_answers_busy(tmp_path: Path) -> None:
    async def main() -> None:
        server = await _serve(tmp_path, Target())
        held: list[socket.socket] = []
        try:
            def fill() -> dict[str, Any]:
                for _ in range(16):
                    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    s.connect(str(tmp_path / "control.sock"))
                    held.append(s)
                    s.sendall(b'{"op": "buffer"}\n')
                    s.recv(100)  # served, still open
                return _ask(tmp_path / "control.sock", [b'{"op": "buffer"}\n'])[0]

            def slow_sender() -> dict[str, Any]:
                """Sends its request a little after connecting: it still gets the answer (the
                daemon reads it before answering busy), not a broken pipe."""
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.settimeout(10)
                    s.connect(str(tmp_path / "control.sock"))
                    time.sleep(0.3)
                    s.sendall(b'{"op": "buffer"}\n')
                    with s.makefile("rb") as f:
                        doc: dict[str, Any] = json.loads(f.readline())
                        return doc

            assert (await asyncio.to_thread(fill))["error"] == "busy"
            assert (await asyncio.to_thread(slow_sender))["error"] == "busy"
            for s in held:
                s.close()
            held.clear()
            await asyncio.sleep(0.2)
            r = await asyncio.to_thread(_ask, tmp_path / "control.sock", [b'{"op": "buffer"}\n'])
            assert r[0]["ok"] is True
        finally:
            for s in held:
                s.close()
            await server.stop()

    asyncio.run(main())


@pytest.fixture
def full_outbox(tmp_path: Path) -> Any:
    key = fixed_key()
    signer = BatchSigner(key, "gw", "boot")
    box = Outbox(tmp_path / "outbox.db", cap_bytes=256 * 1024 * 1024)
    chain = build_chain(signer, 1500, per_batch=120)
    for i in range(0, len(chain), 100):
        box.append(chain[i : i + 100])
    yield box, chain
    box.close()


def test_export_streams_pages_with_backpressure_and_stops_when_client_goes(
        tmp_path: Path, full_outbox: Any) -> None:
    box, chain = full_outbox
    total = sum(len(b.cose) for b in chain)
    assert total > 2 * 1024 * 1024  # far more than the socket buffers hold

    async def main() -> None:
        target = Target(box)
        server = await _serve(tmp_path, target)
        try:
            def slow_reader() -> tuple[dict[str, Any], int]:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.connect(str(tmp_path / "control.sock"))
                    s.sendall(b'{"op": "export"}\n')
                    f = s.makefile("rb")
                    head = json.loads(f.readline())
                    first = json.loads(f.readline())["batch"]
                    assert base64.b64decode(first["cose"]) == chain[0].cose
                    import time
                    time.sleep(1.0)  # the daemon must wait for us, not read ahead
                    fetched = sum(target.pages)
                    f.close()
                    return head, fetched  # and go away mid-stream

            head, fetched = await asyncio.to_thread(slow_reader)
            assert head["ok"] and head["head_seq"] == 1500 and head["depth"] == 1500
            assert max(target.pages) <= PAGE
            assert fetched < 400, fetched  # bounded by socket buffers + one page, not 1500
            await asyncio.wait_for(target.export_closed.wait(), 10)  # the stream was closed
            # a full export on the next connection still works, in seq order, every batch
            def full() -> list[dict[str, Any]]:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.settimeout(30)
                    s.connect(str(tmp_path / "control.sock"))
                    s.sendall(b'{"op": "export", "after_seq": 1000}\n')
                    return [json.loads(ln) for ln in s.makefile("rb")]

            msgs = await asyncio.to_thread(full)
            seqs = [m["batch"]["seq"] for m in msgs if "batch" in m]
            assert seqs == list(range(1001, 1501))
            assert msgs[-1]["end"]["batches"] == 500 and msgs[-1]["end"]["first_seq"] == 1001
        finally:
            await server.stop()

    asyncio.run(main())
