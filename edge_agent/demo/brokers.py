"""The demo's broker: the system mosquitto when installed, else the embedded Python broker."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

from edge_agent.demo.broker import Broker
from edge_agent.errors import UplinkError


def free_port() -> int:
    """A loopback TCP port nobody listens on right now (demo, tests and benchmarks share this)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(port: int, timeout_s: float = 10.0) -> None:
    """Until something accepts connections on 127.0.0.1:``port``; UplinkError after that."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port),
                                                                    timeout=0.2):
            return
        time.sleep(0.02)
    raise UplinkError(f"nothing listening on 127.0.0.1:{port} after {timeout_s} s")


def mosquitto_path() -> str | None:
    return shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)


class DemoBroker:
    """start() / kill() / stop(); ``kind`` says which broker runs. Loopback only.

    Both keep persistent sessions across a kill: mosquitto with persistence on and a graceful
    SIGTERM, the embedded broker by keeping its state in memory. So the demo's verifying consumer
    (a persistent session) gets every batch the broker acknowledged to the agent, outage or not."""

    def __init__(self, workdir: Path, *, prefer_mosquitto: bool = True) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.exe = mosquitto_path() if prefer_mosquitto else None
        self.kind = "mosquitto" if self.exe else "embedded"
        self._proc: subprocess.Popen[bytes] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broker: Broker | None = None
        self.running = False

    def start(self) -> None:
        if self.exe:
            conf = self.workdir / "mosquitto.conf"
            lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true",
                     "persistence true", f"persistence_location {self.workdir}/",
                     "max_queued_messages 100000"]
            if os.geteuid() == 0:  # keep the invoking user: it owns the persistence directory
                lines.append("user root")
            conf.write_text("\n".join(lines) + "\n")
            self._proc = subprocess.Popen([self.exe, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL)
        else:
            if self._broker is None:
                self._loop = asyncio.new_event_loop()
                self._broker = Broker(port=self.port)
                self._thread = threading.Thread(target=self._loop.run_forever,
                                                name="demo-broker", daemon=True)
                self._thread.start()
            assert self._loop is not None
            asyncio.run_coroutine_threadsafe(self._broker.start(), self._loop).result(5)
        try:
            wait_port(self.port)
        except UplinkError:
            raise UplinkError(f"{self.kind} broker did not start on port {self.port}") from None
        self.running = True

    def kill(self) -> None:
        """A broker outage (sessions survive, as with a persistent production broker)."""
        self.running = False
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        elif self._broker is not None and self._loop is not None:
            asyncio.run_coroutine_threadsafe(self._broker.stop(), self._loop).result(5)

    def stop(self) -> None:
        self.kill()
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            self._loop.close()
        self._broker = self._loop = self._thread = None
