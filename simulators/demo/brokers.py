"""The demo's broker: the system mosquitto when installed, else amqtt (PyPI, the lab's ``demo``
extra) in this process. No broker of our own.

The demo promises that every batch the broker acknowledged to the agent reaches the verifying
consumer (a persistent session), outage or not. How each broker keeps it:

* ``mosquitto`` — a real process with persistence on. An outage kills it (SIGTERM: it saves its
  sessions and queued messages) and starts it again; the consumer's session survives.
* ``amqtt`` — keeps no session across a restart (``Broker.start()`` clears them), so killing it
  would lose what it had acknowledged but not yet delivered. Its outage is therefore a cut of the
  agent's link instead: the agent reaches the broker through a loopback relay, which ``kill()``
  closes (connections dropped, port refused) and ``start()`` reopens. The agent sees the same
  thing as with a dead broker — refused connections, unacknowledged batches kept in its outbox —
  while the broker and the consumer's session stay up. The demo says which kind of outage it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_agent.errors import UplinkError
from simulators.loopback import free_port, mosquitto_path, wait_port

KINDS = ("auto", "mosquitto", "amqtt")


class NoBroker(UplinkError):
    """Neither mosquitto nor amqtt is installed."""


def _amqtt_installed() -> bool:
    try:
        import amqtt.broker  # noqa: F401
    except ImportError:
        return False
    return True


def choose(kind: str) -> str:
    """``auto`` → mosquitto when installed, else amqtt; NoBroker when the one asked for is not."""
    if kind in ("auto", "mosquitto") and mosquitto_path():
        return "mosquitto"
    if kind in ("auto", "amqtt") and _amqtt_installed():
        return "amqtt"
    raise NoBroker(f"no MQTT broker for the demo ({kind}): install mosquitto (sudo apt-get "
                   "install mosquitto) or the lab's demo extra (pip install './simulators[demo]')")


class DemoBroker:
    """start() / kill() / stop() on loopback; ``kind`` says which broker runs, ``port`` is the
    agent's port, ``consumer_port`` the verifier's, ``outage`` what kill() does."""

    def __init__(self, workdir: Path, *, kind: str = "auto",
                 spawn: Callable[..., subprocess.Popen[bytes]] | None = None) -> None:
        self.workdir = workdir
        self._spawn = spawn or subprocess.Popen  # the demo's: its children's process group
        self.kind = choose(kind)
        self.port = free_port()
        self.consumer_port = self.port
        self.outage = ("broker killed" if self.kind == "mosquitto"
                       else "agent's link to the broker cut")
        self.running = False
        self._proc: subprocess.Popen[bytes] | None = None
        self._amqtt: _InProcessAmqtt | None = None

    def start(self) -> None:
        if self.kind == "mosquitto":
            self._start_mosquitto()
        else:
            if self._amqtt is None:
                self._amqtt = _InProcessAmqtt(self.workdir / "broker.log")
                self.consumer_port = self._amqtt.port
            self._amqtt.open_relay(self.port)
        try:
            wait_port(self.port)
        except UplinkError:
            raise UplinkError(f"{self.kind} broker did not start on port {self.port}") from None
        self.running = True

    def _start_mosquitto(self) -> None:
        exe = mosquitto_path()
        assert exe is not None
        conf = self.workdir / "mosquitto.conf"
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true",
                 "persistence true", f"persistence_location {self.workdir}/",
                 "max_queued_messages 100000"]
        if os.geteuid() == 0:  # keep the invoking user: it owns the persistence directory
            lines.append("user root")
        conf.write_text("\n".join(lines) + "\n")
        with open(self.workdir / "broker.log", "ab") as log:
            self._proc = self._spawn([exe, "-c", str(conf)], stdout=log, stderr=log)

    def kill(self) -> None:
        """An outage; sessions survive (see the module docstring)."""
        self.running = False
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        elif self._amqtt is not None:
            self._amqtt.close_relay()

    def stop(self) -> None:
        self.kill()
        if self._amqtt is not None:
            self._amqtt.shutdown()
            self._amqtt = None


class _InProcessAmqtt:
    """amqtt on its own event-loop thread, listening on a private loopback port, plus the relay
    the agent connects through. Its log goes to ``log`` (the demo's workdir)."""

    def __init__(self, log: Path) -> None:
        from amqtt.broker import Broker

        logger = logging.getLogger("amqtt")
        handler = logging.FileHandler(log)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
        self._handler = handler
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="demo-amqtt",
                                        daemon=True)
        self._thread.start()
        config: dict[str, Any] = {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin":
                        {"allow_anonymous": True}},
        }

        async def make() -> Broker:
            broker = Broker(config)
            await broker.start()
            return broker

        self._broker = self._run(make())
        self._relay: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()

    def _run(self, coro: Any, timeout_s: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout_s)

    def open_relay(self, port: int) -> None:
        async def serve() -> asyncio.Server:
            return await asyncio.start_server(self._link, "127.0.0.1", port)

        self._relay = self._run(serve())

    def close_relay(self) -> None:
        async def cut() -> None:
            if self._relay is not None:
                self._relay.close()
            for w in list(self._links):
                w.transport.abort()  # a dead link: no FIN handshake, in-flight bytes lost
            self._links.clear()
            if self._relay is not None:
                await self._relay.wait_closed()
                self._relay = None

        self._run(cut())

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            writer.transport.abort()
            return
        self._links |= {writer, up_w}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))
        self._links -= {writer, up_w}

    def shutdown(self) -> None:
        self.close_relay()
        with contextlib.suppress(Exception):  # best effort at the end of the demo
            self._run(self._broker.shutdown())

        async def settle() -> None:
            rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in rest:
                t.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        with contextlib.suppress(Exception):
            self._run(settle())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()
        logger = logging.getLogger("amqtt")
        logger.removeHandler(self._handler)
        self._handler.close()
