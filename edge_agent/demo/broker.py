"""A small embedded MQTT 3.1.1 broker so the demo runs where mosquitto is not installed.

Supports what the demo needs and nothing more: CONNECT (clean or persistent session, will),
PUBLISH QoS 0/1 (PUBACK), retained messages, SUBSCRIBE/UNSUBSCRIBE with + and # wildcards (granted
QoS = min), PINGREQ, DISCONNECT. Persistent sessions (clean_session = 0) keep their subscriptions
and queue QoS 1 messages while the client is away — also across ``stop()``/``start()`` of the same
Broker object, which is how the demo "kills" it. Not for production: in memory only, no auth, no
QoS 2, loopback only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


def topic_matches(pattern: str, topic: str) -> bool:
    p_parts = pattern.split("/")
    t_parts = topic.split("/")
    for i, p in enumerate(p_parts):
        if p == "#":
            return True
        if i >= len(t_parts):
            return False
        if p != "+" and p != t_parts[i]:
            return False
    return len(p_parts) == len(t_parts)


def _encode_len(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(s: str) -> bytes:
    b = s.encode()
    return struct.pack("!H", len(b)) + b


@dataclass(eq=False)
class _Client:
    writer: asyncio.StreamWriter
    client_id: str = ""
    subs: dict[str, int] = field(default_factory=dict)
    will: tuple[str, bytes, int, bool] | None = None
    clean: bool = True
    next_mid: int = 1

    def mid(self) -> int:
        m = self.next_mid
        self.next_mid = m % 65535 + 1
        return m


class Broker:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None
        self._clients: set[_Client] = set()
        self._retained: dict[str, tuple[bytes, int]] = {}
        self._sessions: dict[str, dict[str, int]] = {}  # persistent client id -> subscriptions
        self._queued: dict[str, list[tuple[str, bytes, int]]] = {}  # ... -> messages while away

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for c in list(self._clients):
                c.writer.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client = _Client(writer)
        clean = False
        try:
            while True:
                head = await reader.readexactly(1)
                length = 0
                mult = 1
                for _ in range(4):
                    b = (await reader.readexactly(1))[0]
                    length += (b & 0x7F) * mult
                    mult *= 128
                    if not b & 0x80:
                        break
                body = await reader.readexactly(length)
                ptype, flags = head[0] >> 4, head[0] & 0x0F
                if ptype == 1:
                    self._connect(client, body)
                elif ptype == 3:
                    await self._publish_in(client, flags, body)
                elif ptype == 8:
                    self._subscribe(client, body)
                elif ptype == 10:
                    self._unsubscribe(client, body)
                elif ptype == 12:
                    writer.write(b"\xd0\x00")
                elif ptype == 14:
                    clean = True
                    break
                # PUBACK (4) from subscribers: nothing to do (no redelivery state kept)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError, IndexError):
            pass
        finally:
            self._clients.discard(client)
            if not client.clean and client.client_id:
                self._sessions[client.client_id] = client.subs
                self._queued.setdefault(client.client_id, [])
            if client.will is not None and not clean:
                topic, payload, qos, retain = client.will
                self._route(topic, payload, qos, retain)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _connect(self, client: _Client, body: bytes) -> None:
        n = struct.unpack("!H", body[:2])[0]
        pos = 2 + n + 1
        flags = body[pos]
        pos += 3  # flags + keepalive
        n = struct.unpack("!H", body[pos : pos + 2])[0]
        client.client_id = body[pos + 2 : pos + 2 + n].decode()
        pos += 2 + n
        if flags & 0x04:
            n = struct.unpack("!H", body[pos : pos + 2])[0]
            topic = body[pos + 2 : pos + 2 + n].decode()
            pos += 2 + n
            n = struct.unpack("!H", body[pos : pos + 2])[0]
            payload = body[pos + 2 : pos + 2 + n]
            client.will = (topic, payload, (flags >> 3) & 3, bool(flags & 0x20))
        client.clean = bool(flags & 0x02)
        present = 0
        if client.clean:
            self._sessions.pop(client.client_id, None)
            self._queued.pop(client.client_id, None)
        elif client.client_id in self._sessions:
            client.subs = self._sessions.pop(client.client_id)
            present = 1
        self._clients.add(client)
        client.writer.write(bytes((0x20, 0x02, present, 0x00)))
        for topic, payload, qos in self._queued.pop(client.client_id, []):
            self._send(client, topic, payload, qos, False)

    async def _publish_in(self, client: _Client, flags: int, body: bytes) -> None:
        qos = (flags >> 1) & 3
        retain = bool(flags & 1)
        n = struct.unpack("!H", body[:2])[0]
        topic = body[2 : 2 + n].decode()
        pos = 2 + n
        if qos:
            mid = body[pos : pos + 2]
            pos += 2
        self._route(topic, body[pos:], qos, retain)
        if qos:
            client.writer.write(b"\x40\x02" + mid)

    def _route(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        if retain:
            if payload:
                self._retained[topic] = (payload, qos)
            else:
                self._retained.pop(topic, None)
        for c in list(self._clients):
            granted = max(
                (q for p, q in c.subs.items() if topic_matches(p, topic)), default=-1
            )
            if granted >= 0:
                self._send(c, topic, payload, min(qos, granted), False)
        for cid, subs in self._sessions.items():  # persistent sessions whose client is away
            granted = max((q for p, q in subs.items() if topic_matches(p, topic)), default=-1)
            if min(qos, granted) >= 1:
                self._queued.setdefault(cid, []).append((topic, payload, 1))

    def _send(self, c: _Client, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        var = _str(topic) + (struct.pack("!H", c.mid()) if qos else b"")
        head = 0x30 | (qos << 1) | (1 if retain else 0)
        c.writer.write(bytes([head]) + _encode_len(len(var) + len(payload)) + var + payload)

    def _subscribe(self, client: _Client, body: bytes) -> None:
        mid = body[:2]
        pos = 2
        granted = bytearray()
        new: list[tuple[str, int]] = []
        while pos < len(body):
            n = struct.unpack("!H", body[pos : pos + 2])[0]
            pattern = body[pos + 2 : pos + 2 + n].decode()
            qos = min(1, body[pos + 2 + n] & 3)
            pos += 3 + n
            client.subs[pattern] = qos
            granted.append(qos)
            new.append((pattern, qos))
        client.writer.write(b"\x90" + _encode_len(2 + len(granted)) + mid + bytes(granted))
        for pattern, qos in new:
            for topic, (payload, rq) in self._retained.items():
                if topic_matches(pattern, topic):
                    self._send(client, topic, payload, min(qos, rq), True)

    def _unsubscribe(self, client: _Client, body: bytes) -> None:
        mid = body[:2]
        pos = 2
        while pos < len(body):
            n = struct.unpack("!H", body[pos : pos + 2])[0]
            client.subs.pop(body[pos + 2 : pos + 2 + n].decode(), None)
            pos += 2 + n
        client.writer.write(b"\xb0\x02" + mid)
