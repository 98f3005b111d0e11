"""The demo's broker: the system mosquitto when installed, else the embedded Python broker."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

from edge_agent.demo.broker import Broker


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def mosquitto_path() -> str | None:
    return shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)


class DemoBroker:
    """start() / stop() / restart(); ``kind`` says which broker runs. Loopback only."""

    def __init__(self, workdir: Path, *, prefer_mosquitto: bool = True) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.exe = mosquitto_path() if prefer_mosquitto else None
        self.kind = "mosquitto" if self.exe else "embedded"
        self._proc: subprocess.Popen[bytes] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broker: Broker | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None or self._broker is not None

    def start(self) -> None:
        if self.exe:
            conf = self.workdir / "mosquitto.conf"
            conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
                            "persistence false\nmax_queued_messages 100000\n")
            self._proc = subprocess.Popen([self.exe, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL)
        else:
            self._loop = asyncio.new_event_loop()
            self._broker = Broker(port=self.port)
            self._loop.run_until_complete(self._broker.start())
            self._thread = threading.Thread(target=self._loop.run_forever, name="demo-broker",
                                            daemon=True)
            self._thread.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port),
                                                                        timeout=0.2):
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.kind} broker did not start on port {self.port}")

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        if self._broker is not None and self._loop is not None and self._thread is not None:
            asyncio.run_coroutine_threadsafe(self._broker.stop(), self._loop).result(5)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            self._loop.close()
            self._broker = self._loop = self._thread = None

    def kill(self) -> None:
        """Broker outage: kill -9 (mosquitto) or stop (embedded)."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None
        else:
            self.stop()
