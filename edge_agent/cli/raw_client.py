"""A Modbus line for commissioning tools (``modbus``, ``scan``, ``profile new --scan``): through the
daemon's bus owner when the daemon runs and owns the line, straight on the port when it does not.

``open_line(args, name)`` resolves ``name``: a bus of the running daemon (by name or port), a bus
of the config (daemon stopped), a serial port path (``/dev/ttyUSB0``, with --baud/--parity) or
``host:port`` (Modbus TCP). Whatever is returned speaks the bus owner's contract (``read``,
``write``, ``min_timeout_s``, ``close``) and raises the same errors.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from edge_agent.bus.base import ModbusBus
from edge_agent.cli.common import EXIT_USAGE, CliError, UnknownName, socket_path
from edge_agent.cli.failure import Explained
from edge_agent.config.model import SerialBus, TcpBus
from edge_agent.errors import (
    BusClosed,
    BusError,
    BusTimeout,
    FrameError,
    ModbusException,
)
from edge_agent.profiles.model import Table

T = TypeVar("T")
DAEMON_TIMEOUT_S = 20.0  # the op waits for a slot between polls, then for the device


class DaemonBus:
    """The daemon's bus owner, over the control socket (op ``modbus``), awaited in the event loop
    (Ctrl-C stops a scan between two requests, or in the middle of one)."""

    def __init__(self, sock: Any, bus: str, probe: bool = False) -> None:
        from edge_agent.control.client import AsyncControlClient

        self._client = AsyncControlClient(sock)
        self.name = bus
        self._probe = probe

    async def _call(self, **kw: Any) -> dict[str, Any]:
        from edge_agent.control.client import ControlRefused

        try:
            res: dict[str, Any] = await self._client.result(
                "modbus", timeout_s=DAEMON_TIMEOUT_S, bus=self.name, probe=self._probe, **kw)
        except ControlRefused as exc:  # the owner's errors, as the owner raises them
            if exc.reason == "BusTimeout":
                raise BusTimeout(exc.detail) from None
            if exc.reason in ("FrameError", "CrcError"):
                raise FrameError(exc.detail) from None
            if exc.reason in ("BusClosed", "PortBusy"):
                raise BusClosed(exc.detail) from None
            if exc.reason == "BusError":
                raise BusError(exc.detail) from None
            raise
        if "exception" in res:
            raise ModbusException(int(res["exception"]))
        return res

    async def read(self, unit: int, table: Table, address: int, count: int, *,
                   timeout_s: float) -> list[int]:
        res = await self._call(unit=unit, table=str(table), address=address, count=count,
                               timeout=timeout_s)
        return [int(r) for r in res["registers"]]

    async def write(self, unit: int, table: Table, address: int, values: Sequence[int], *,
                    timeout_s: float) -> None:
        await self._call(unit=unit, table=str(table), address=address, values=list(values),
                         timeout=timeout_s)

    def min_timeout_s(self, table: Table, count: int) -> float:
        return 0.0  # the daemon raises a too short timeout to its line's minimum

    async def close(self) -> None:
        await self._client.close()


@dataclass
class Line:
    bus: ModbusBus
    label: str  # "rs485-1 (/dev/ttyUSB0 9600 8N1)"
    via: str  # "daemon" or "direct"
    timeout_s: float  # default per request
    serial: SerialBus | None = None  # the line's settings, when known
    tcp: str = ""  # host:port of a Modbus TCP device (its failures are said for a network)

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        """``asyncio.run(work)``, a failure of the line as the one line a technician reads."""
        import asyncio

        from edge_agent.cli.failure import as_cli_error
        from edge_agent.control.client import ControlRefused

        try:
            return asyncio.run(work)
        except (BusError, ControlRefused) as exc:
            err = as_cli_error(exc, tcp=self.tcp)
            if err is None:
                raise
            raise Explained(err) from None


def _describe(b: SerialBus | TcpBus) -> str:
    if isinstance(b, TcpBus):
        return f"{b.name} ({b.host}:{b.port})"
    return f"{b.name} ({b.port} {b.baud} {b.bytesize}{b.parity}{b.stopbits})"


def _config_bus(b: dict[str, Any]) -> SerialBus | TcpBus | None:
    if b["kind"] == "tcp":
        return TcpBus(name=b["name"], host=b["host"], port=b["port"])
    if b["kind"] == "rtu":
        return SerialBus(name=b["name"], port=b["port"], baud=b["baud"], parity=b["parity"],
                         stopbits=b.get("stopbits", 1))
    return None


def _matches(b: dict[str, Any], name: str) -> bool:
    if b["name"] == name:
        return True
    if "host" in b:
        return name in (f"{b['host']}:{b['port']}", b["host"])
    port = str(b["port"])
    return port == name or os.path.realpath(port) == os.path.realpath(name)


def _adhoc(name: str, baud: int, parity: str) -> SerialBus | TcpBus | None:
    """A port path or host:port given straight on the command line."""
    if name.startswith("/") or name.startswith("./"):
        return SerialBus(name=name, port=name, baud=baud, parity=parity,
                         late_answer_window_s=0.0)
    host, sep, port = name.rpartition(":")
    if sep and host and port.isdigit() and 0 < int(port) < 65536:
        return TcpBus(name=name, host=host, port=int(port))
    return None


def _daemon_buses(args: argparse.Namespace) -> list[dict[str, Any]] | None:
    """The running daemon's buses; None when no daemon answers."""
    from edge_agent.control.client import ControlClient, DaemonNotRunning

    try:
        with ControlClient(socket_path(args)) as c:
            buses: list[dict[str, Any]] = c.result("catalog")["buses"]
            return buses
    except DaemonNotRunning:
        return None


def _config_buses(args: argparse.Namespace) -> list[dict[str, Any]]:
    from edge_agent.cli.common import config_path
    from edge_agent.config.catalog import bus_info
    from edge_agent.config.load import load_config

    cfg = config_path(args)
    if not cfg.exists() and not getattr(args, "config_given", False):
        return []
    return bus_info(load_config(cfg))


def direct_owner(b: SerialBus | TcpBus) -> ModbusBus:
    from edge_agent.bus.serial_line import SerialRtuBus
    from edge_agent.bus.tcp_endpoint import TcpEndpoint

    if isinstance(b, TcpBus):
        return TcpEndpoint(b)
    if not os.path.exists(b.port):
        raise CliError(f"no serial port {b.port}", "is the adapter plugged in? see: "
                       "ls /dev/ttyUSB* /dev/ttyAMA* /dev/serial/by-id", EXIT_USAGE, "no_port")
    return SerialRtuBus(b)


def open_line(args: argparse.Namespace, name: str, *, baud: int | None = None,
              parity: str | None = None, probe: bool = False) -> Line:
    """The line ``name`` names, through the daemon when it owns it. ``baud``/``parity``: what
    the command line asked for (None: not given); refused when the daemon runs the line at
    other settings, used instead of the config's when the port is opened directly."""
    running = _daemon_buses(args)
    if running is not None:
        for b in running:
            if _matches(b, name):
                if b["kind"] == "at":
                    raise CliError(f"bus {b['name']} is an AT-command line, not Modbus", "",
                                   EXIT_USAGE, "unsupported")
                _same_settings(b, baud, parity)
                known = _config_bus(b)
                label = _describe(known) if known is not None else b["name"]
                return Line(DaemonBus(socket_path(args), b["name"], probe), label, "daemon",
                            1.0, known if isinstance(known, SerialBus) else None, _tcp(known))
    buses = [] if running is not None else _config_buses(args)
    for b in buses:
        if _matches(b, name):
            known = _config_bus(b)
            if known is None:
                raise CliError(f"bus {b['name']} is an AT-command line, not Modbus", "",
                               EXIT_USAGE, "unsupported")
            if isinstance(known, SerialBus):
                known = SerialBus(name=known.name, port=known.port, baud=baud or known.baud,
                                  parity=parity or known.parity, stopbits=known.stopbits,
                                  late_answer_window_s=0.0)
            return Line(direct_owner(known), _describe(known), "direct", known.timeout_max_s,
                        known if isinstance(known, SerialBus) else None, _tcp(known))
    adhoc = _adhoc(name, baud or 9600, parity or "N")
    if adhoc is None:
        names = [b["name"] for b in (running or buses)]
        raise UnknownName("bus", name, names, what="give a bus name, a serial port path or "
                          "HOST:PORT")
    return Line(direct_owner(adhoc), _describe(adhoc), "direct", adhoc.timeout_max_s,
                adhoc if isinstance(adhoc, SerialBus) else None, _tcp(adhoc))


def _tcp(b: SerialBus | TcpBus | None) -> str:
    return f"{b.host}:{b.port}" if isinstance(b, TcpBus) else ""


def _same_settings(b: dict[str, Any], baud: int | None, parity: str | None) -> None:
    """CliError when --baud/--parity ask for other settings than the daemon runs the line at:
    going through the daemon, the request would silently use the line's own."""
    if b["kind"] != "rtu" or (baud in (None, b["baud"]) and parity in (None, b["parity"])):
        return
    asked = f"{baud or b['baud']} {parity or b['parity']}"
    raise CliError(f"the daemon runs {b['name']} ({b['port']}) at {b['baud']} {b['parity']}, "
                   f"not {asked}", "leave out --baud/--parity to use the line's settings, or "
                   "stop the daemon first: sudo systemctl stop edge-agent", EXIT_USAGE,
                   "daemon_owns_line")
