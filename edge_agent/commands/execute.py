"""Runs a verified command against the devices, through the poller's write/read path.

The device-facing side is a small Protocol so that the same executor serves remote commands and the
local control socket; the poller implements it (serialised with polls on the bus owner).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from edge_agent.commands.model import Action, Command
from edge_agent.config.model import AgentConfig
from edge_agent.errors import BusError, CodecError, CommandRefused
from edge_agent.profiles import codec
from edge_agent.profiles.model import ModbusPoint
from edge_agent.readings import Value


class DeviceIO(Protocol):
    async def write(self, device: str, point: str, value: Value) -> Value: ...

    async def read_now(self, device: str, point: str | None = None) -> dict[str, Value]: ...


def check_target(config: AgentConfig, cmd: Command) -> ModbusPoint | None:
    """Refuse unknown devices/points, non-writable points and out-of-bounds values."""
    if cmd.action not in (Action.WRITE, Action.READ):
        return None
    dev = next((d for d in config.devices if d.name == cmd.device), None)
    if dev is None:
        raise CommandRefused("unknown_device", cmd.device)
    profile = config.profiles[dev.profile]
    if not cmd.point:
        return None
    try:
        point = profile.point(cmd.point)
    except KeyError:
        raise CommandRefused("unknown_point", f"{cmd.device}.{cmd.point}") from None
    if cmd.action is Action.READ:
        return None
    if not isinstance(point, ModbusPoint) or not point.writable:
        raise CommandRefused("not_writable", f"{cmd.device}.{cmd.point}")
    try:
        codec.check_write(point, cmd.value)
    except CodecError as exc:
        raise CommandRefused("out_of_bounds", str(exc)) from None
    return point


class CommandExecutor:
    def __init__(
        self,
        config: Callable[[], AgentConfig],
        io: DeviceIO,
        reload: Callable[[], Awaitable[str]] | None = None,
    ) -> None:
        self._config = config
        self._io = io
        self._reload = reload

    async def execute(self, cmd: Command) -> Value | dict[str, Value]:
        """The confirmed value (write), the values read (read), or a short text (ping/reload).
        Raises CommandRefused with the reason when the command cannot be carried out."""
        check_target(self._config(), cmd)
        if cmd.action is Action.PING:
            return "pong"
        if cmd.action is Action.RELOAD:
            if self._reload is None:
                raise CommandRefused("reload_failed", "reload not available")
            return await self._reload()
        try:
            if cmd.action is Action.WRITE:
                return await self._io.write(cmd.device, cmd.point, cmd.value)
            return await self._io.read_now(cmd.device, cmd.point or None)
        except BusError as exc:
            raise CommandRefused("device_error", f"{type(exc).__name__}: {exc}") from None
        except CodecError as exc:
            raise CommandRefused("out_of_bounds", str(exc)) from None
