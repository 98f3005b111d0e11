"""A pty peer that answers each CR-terminated line with scripted bytes (after an optional delay),
for AT client tests that need line noise or exact timing the module simulator does not make."""

from __future__ import annotations

import os
import select
import threading
import time
import tty
from collections.abc import Callable

Script = Callable[[str], tuple[float, bytes]]  # command line -> (delay s, bytes to send)


class ScriptedPty:
    def __init__(self, script: Script) -> None:
        self.script = script
        self.received: list[str] = []
        self.path = ""
        self._master = self._slave = self._stop_r = self._stop_w = -1
        self._thread: threading.Thread | None = None

    def start(self) -> str:
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.path = os.ttyname(self._slave)
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name="scripted-pty", daemon=True)
        self._thread.start()
        return self.path

    def send(self, data: bytes) -> None:
        os.write(self._master, data)

    def stop(self) -> None:
        if self._thread is not None:
            os.write(self._stop_w, b"x")
            self._thread.join(5)
            self._thread = None
        for fd in (self._master, self._slave, self._stop_r, self._stop_w):
            if fd >= 0:
                os.close(fd)
        self._master = self._slave = self._stop_r = self._stop_w = -1

    def _run(self) -> None:
        buf = bytearray()
        pending: list[tuple[float, bytes]] = []
        while True:
            timeout = 0.5
            if pending:
                timeout = max(0.0, min(t for t, _ in pending) - time.monotonic())
            ready, _, _ = select.select([self._master, self._stop_r], [], [], timeout)
            if self._stop_r in ready:
                return
            if self._master in ready:
                try:
                    buf += os.read(self._master, 4096)
                except OSError:
                    return
                while b"\r" in buf:
                    line, _, rest = bytes(buf).partition(b"\r")
                    buf[:] = rest
                    text = line.decode("ascii", "replace")
                    self.received.append(text)
                    delay, answer = self.script(text)
                    pending.append((time.monotonic() + delay, answer))
            now = time.monotonic()
            for item in sorted(p for p in pending if p[0] <= now):
                pending.remove(item)
                os.write(self._master, item[1])
