"""Servers for TcpEndpoint tests: a real pymodbus server, and a raw MBAP server whose misbehaviour
(stall, reset, late or garbage answers) is scripted by the test."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import cast

from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice


@contextlib.asynccontextmanager
async def pymodbus_server(unit: int = 1) -> AsyncIterator[int]:
    """Holding 0..99 = i, input 0..99 = 1000 + i, coils 0..99 = 0, discrete 0..99 = i % 3 == 0."""
    dev = SimDevice(
        id=unit,
        simdata=(
            [SimData(0, count=100, values=False, datatype=DataType.BITS)],
            [SimData(0, values=[i % 3 == 0 for i in range(100)], datatype=DataType.BITS)],
            [SimData(0, values=list(range(100)), datatype=DataType.REGISTERS)],
            [SimData(0, values=list(range(1000, 1100)), datatype=DataType.REGISTERS)],
        ),
    )
    server = ModbusTcpServer(dev, address=("127.0.0.1", 0))
    await server.serve_forever(background=True)
    try:
        listener = cast(asyncio.Server, server.transport)
        yield int(listener.sockets[0].getsockname()[1])
    finally:
        await server.shutdown()  # type: ignore[no-untyped-call]


@dataclass
class RawServer:
    """Answers fc 3 with registers = address + i and echoes writes (fc 5, 6, 15, 16); ``mode``
    scripts misbehaviour per request. While ``hold`` is set and not done, the server reads
    nothing (with ``rcvbuf`` small, the client's sends soon find its socket buffer full)."""

    mode: str = "ok"  # ok, stall, reset, garbage, late_first, half (half an answer, then close)
    delay_s: float = 0.0
    late_s: float = 0.2
    port: int = 0
    hold: asyncio.Future[None] | None = None
    rcvbuf: int = 0  # SO_RCVBUF of the accepted sockets (0: the system's)
    requests: int = 0
    connections: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def start(self, port: int = 0) -> int:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.rcvbuf:  # before listen(): accepted sockets inherit it (and its TCP window)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
        listener.bind(("127.0.0.1", port))
        self._server = await asyncio.start_server(self._client, sock=listener)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for w in self._writers:
                w.close()
            await self._server.wait_closed()
            self._server = None
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        try:
            while True:
                if self.hold is not None and not self.hold.done():
                    transport = cast(asyncio.Transport, writer.transport)
                    transport.pause_reading()  # (the transport would read on anyway)
                    await asyncio.shield(self.hold)
                    transport.resume_reading()
                head = await reader.readexactly(7)
                body = await reader.readexactly(int.from_bytes(head[4:6], "big") - 1)
                self.requests += 1
                if self.mode == "stall":
                    continue
                if self.mode == "reset":
                    writer.transport.abort()
                    return
                if self.mode == "garbage":
                    writer.write(b"\xde\xad\xbe\xef\xff\xff\x00\x00")
                    continue
                if self.mode == "half":
                    pdu = b"\x03\x02\x00\x07"
                    writer.write((head[:4] + (len(pdu) + 1).to_bytes(2, "big") + head[6:7]
                                  + pdu)[:9])
                    await writer.drain()
                    return
                task = asyncio.create_task(self._answer(writer, head, body))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _answer(self, writer: asyncio.StreamWriter, head: bytes, body: bytes) -> None:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            delay = self.delay_s
            if self.mode == "late_first" and self.requests == 1:
                delay = self.late_s
            if delay:
                await asyncio.sleep(delay)
            if body[0] in (5, 6, 15, 16):  # a write: echo the address and value / count
                pdu = body[:5]
                writer.write(head[:4] + (len(pdu) + 1).to_bytes(2, "big") + head[6:7] + pdu)
                return
            addr = int.from_bytes(body[1:3], "big")
            count = int.from_bytes(body[3:5], "big")
            payload = b"".join(((addr + i) & 0xFFFF).to_bytes(2, "big") for i in range(count))
            pdu = bytes((body[0], len(payload))) + payload
            writer.write(head[:4] + (len(pdu) + 1).to_bytes(2, "big") + head[6:7] + pdu)
        finally:
            self.in_flight -= 1
