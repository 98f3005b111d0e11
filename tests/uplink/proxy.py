"""A small TCP proxy for tests: sits between the uplink and mosquitto, can cut every connection,
silently swallow the broker's replies (so PUBACKs never arrive) or play an outage (``down``: every
connection is cut and new ones are closed at once). One thread, closed by ``close()``.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading


class Proxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listen = socket.create_server(("127.0.0.1", 0))
        self._listen.setblocking(False)
        self.port = int(self._listen.getsockname()[1])
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._listen, selectors.EVENT_READ)
        self._peer: dict[socket.socket, socket.socket] = {}
        self._upstream: set[socket.socket] = set()  # sockets connected to the broker
        self._lock = threading.Lock()
        self._cut = False
        self._stop = False
        self.swallow_replies = False  # drop broker -> client bytes
        self.down = False  # an outage: connections are closed as soon as they are accepted
        self.accepted = 0
        self._thread = threading.Thread(target=self._run, name="test-proxy")
        self._thread.start()

    def cut(self) -> None:
        """Close every live connection (both sides) at once."""
        with self._lock:
            self._cut = True

    def outage(self, down: bool) -> None:
        """Start (cutting every live connection) or end an outage."""
        self.down = down
        if down:
            self.cut()

    def _close_pair(self, s: socket.socket) -> None:
        other = self._peer.pop(s, None)
        for x in (s, other):
            if x is None:
                continue
            self._peer.pop(x, None)
            self._upstream.discard(x)
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(x)
            x.close()

    def _run(self) -> None:
        while not self._stop:
            with self._lock:
                if self._cut:
                    self._cut = False
                    for live in list(self._peer):
                        self._close_pair(live)
            for key, _ in self._sel.select(0.02):
                s = key.fileobj
                if not isinstance(s, socket.socket):
                    continue
                if s is self._listen:
                    self._accept()
                    continue
                if s not in self._peer:
                    continue
                try:
                    data = s.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    self._close_pair(s)
                    continue
                if s in self._upstream and self.swallow_replies:
                    continue
                try:
                    self._peer[s].sendall(data)
                except OSError:
                    self._close_pair(s)
        for s in list(self._peer):
            self._close_pair(s)

    def _accept(self) -> None:
        try:
            client, _ = self._listen.accept()
        except BlockingIOError:
            return
        if self.down:
            client.close()
            return
        try:
            up = socket.create_connection(("127.0.0.1", self.target_port), timeout=2)
        except OSError:
            client.close()
            return
        self.accepted += 1
        for x in (client, up):
            x.setblocking(True)
            x.settimeout(5)
            self._sel.register(x, selectors.EVENT_READ)
        self._peer[client] = up
        self._peer[up] = client
        self._upstream.add(up)

    def close(self) -> None:
        self._stop = True
        self._thread.join(5)
        self._sel.close()
        self._listen.close()
