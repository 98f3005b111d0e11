"""Whatever a command raised, as the one line a technician reads: what happened, what to do.

``as_cli_error(exc, socket)`` turns the daemon's refusals (``ControlRefused`` codes), an
unreachable or forbidden socket, bus errors of direct work, config problems and OS errors into a
``CliError`` with an exit code (cli/common.py). Anything else is a bug of ours: ``main`` prints it
in one line too (``internal error``), and the CLI error-path test fails on it.
"""

from __future__ import annotations

import grp
import os
import re
from pathlib import Path

from edge_agent.cli.common import (
    EXIT_FAIL,
    EXIT_NO_DAEMON,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    CliError,
)
from edge_agent.errors import (
    BoundsError,
    BusClosed,
    BusError,
    BusTimeout,
    CodecError,
    CommandRefused,
    ConfigError,
    CrcError,
    EdgeAgentError,
    FrameError,
    ModbusException,
    PortBusy,
    PortDenied,
)

MODBUS_EXCEPTIONS = {
    1: "illegal function (the device does not support this function code)",
    2: "illegal data address (no such register on this device)",
    3: "illegal data value (the device refused the value or the count)",
    4: "device failure",
    5: "acknowledge (the device is still working on it)",
    6: "device busy",
    10: "gateway path unavailable",
    11: "gateway target did not respond",
}
_JOURNAL = "see `journalctl -u edge-agent`"


def snake(name: str) -> str:
    """An error code from a class name the daemon or a library gave (``OutboxError`` ->
    ``outbox_error``): --json codes are snake_case words, never Python class names."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def modbus_exception_text(code: int) -> str:
    return f"Modbus exception {code}: {MODBUS_EXCEPTIONS.get(code, 'vendor specific')}"


def _socket_group(path: Path) -> str:
    try:
        return grp.getgrgid(os.stat(path).st_gid).gr_name
    except (OSError, KeyError):
        return "edge-agent"


def denying_group(path: Path | str, default: str) -> str:
    """The group whose members may reach ``path``, as this user can tell: the group of the
    first directory on the way this user may not search (``/etc/edge-agent`` 0750
    root:edge-agent), else the file's own (``/dev/ttyUSB0`` 0660 root:dialout)."""
    p = Path(os.path.abspath(path))
    for parent in reversed(p.parents):  # "/" first
        if not os.access(parent, os.X_OK):
            p = parent
            break
    try:
        return grp.getgrgid(os.stat(p).st_gid).gr_name
    except (OSError, KeyError):
        return default


def join_hint(group: str) -> str:
    if group == "root":
        return "run with sudo"
    return (f"join the {group!r} group (sudo usermod -aG {group} $USER, then log in again) "
            "or run with sudo")


def not_permitted(what: str, path: Path | str, default_group: str, code: str) -> CliError:
    """``not permitted to open /dev/ttyUSB0; join the 'dialout' group ...``, exit 3: this user
    lacks a right the gateway's technicians get from a group, not a fault to repair."""
    return CliError(f"not permitted to {what} {path}", join_hint(denying_group(path,
                    default_group)), EXIT_NO_DAEMON, code)


def unreadable(path: Path) -> CliError | None:
    """``not permitted to read /etc/edge-agent/agent.toml; join the 'edge-agent' group``
    (exit 3) when this user may not read ``path`` (a config: /etc/edge-agent is 0750
    root:edge-agent); None when it can, or when the file is missing (the loader says that)."""
    try:
        with open(path, "rb"):
            return None
    except PermissionError:
        return not_permitted("read", path, "edge-agent", "config_not_permitted")
    except OSError:
        return None


def unreachable(exc: EdgeAgentError, socket: Path | None) -> CliError:
    from edge_agent.control.client import ControlNotPermitted, DaemonNotRunning

    where = f" at {socket}" if socket is not None else ""
    cause = exc.__cause__
    if isinstance(cause, OSError) and cause.strerror:
        where += f" ({cause.strerror})"
    if isinstance(exc, ControlNotPermitted):
        group = _socket_group(socket) if socket is not None else "edge-agent"
        return CliError(f"not permitted to use the daemon's socket{where}", join_hint(group),
                        EXIT_NO_DAEMON, "not_permitted")
    if isinstance(exc, DaemonNotRunning):
        return CliError(f"the daemon is not running (nothing listens{where})",
                        "start it: sudo systemctl start edge-agent; or pass --socket / --config "
                        "for another one", EXIT_NO_DAEMON, "no_daemon")
    return CliError(f"lost the daemon{where}: {exc}", f"is it restarting? {_JOURNAL}",
                    EXIT_NO_DAEMON, "no_daemon")


def _tcp(reason: str, d: str, where: str) -> CliError | None:
    """The failures of a Modbus TCP device, said for a network (``where``: host:port)."""
    host = where.rpartition(":")[0]
    if reason in ("BusClosed", "PortBusy"):
        return CliError(f"cannot connect to the Modbus TCP device at {where} ({d})",
                        f"is it powered and reachable from this box (ping {host}), and is "
                        f"{where.rpartition(':')[2]} its Modbus TCP port? `edge-agent doctor` "
                        "checks the configured endpoints", EXIT_FAIL, "unreachable")
    if reason in ("CrcError", "FrameError"):
        return CliError(f"failed: garbled answer from {where} ({d})", "does that port speak "
                        "Modbus TCP (not RTU over TCP, not another protocol)? check the "
                        "device's network settings", EXIT_FAIL, "bad_frame")
    if reason in ("timeout", "BusTimeout"):
        return CliError(f"no answer in time from {where} ({d})", "connected, but the unit did "
                        "not answer: check the unit id (behind a gateway: its serial side)",
                        EXIT_TIMEOUT, "timeout")
    return None


def refused(reason: str, detail: str, tcp: str = "") -> CliError:
    """A ``{"ok": false, "error": reason, "detail": ...}`` answer of the daemon, or the same
    refusal raised by direct (daemon-less) work. ``tcp``: the host:port of the Modbus TCP
    device concerned, when the caller knows it is one (the hints differ from a serial line's)."""
    d = detail or reason
    said = _tcp(reason, d, tcp) if tcp else None
    if said is not None:
        return said
    if reason in ("timeout", "BusTimeout"):
        return CliError(f"no answer in time ({d})", "check the device's power, wiring and "
                        "unit id; `edge-agent devices` shows its history", EXIT_TIMEOUT, "timeout")
    if reason == "PortBusy":
        return CliError(f"the serial port is in use by another program ({d})", "stop the "
                        "other program first", EXIT_FAIL, "port_busy")
    if reason == "PortDenied":  # the daemon's own user may not open its port
        return CliError(f"the daemon may not open the serial port ({d})", "the service user "
                        "needs the port's group (dialout): `edge-agent doctor` checks it",
                        EXIT_FAIL, "port_not_permitted")
    if reason == "BusClosed":
        return CliError(f"failed: the bus is not open ({d})", "is the adapter plugged in and the "
                        "port right? `edge-agent doctor` checks it", EXIT_FAIL, "bus_closed")
    if reason in ("CrcError", "FrameError"):
        return CliError(f"failed: garbled answer ({d})", "check termination, baud rate, parity "
                        "and for a second master on the line", EXIT_FAIL, "bad_frame")
    if reason == "ModbusException":
        return CliError(f"the device refused: {d}", "check the address, count and table against "
                        "the device's manual", EXIT_FAIL, "modbus_exception")
    if reason in ("BusError", "AtError"):
        return CliError(f"failed talking to the device ({d})", _JOURNAL, EXIT_FAIL, "bus_error")
    if reason == "out_of_bounds":
        return CliError(f"refused: {d}", "the profile's min/max/step/allowed values bound "
                        "writes", EXIT_FAIL, reason)
    if reason == "not_writable":
        return CliError(f"refused: {d}", "only points with access = \"rw\" can be written",
                        EXIT_FAIL, reason)
    if reason == "not_running":
        return CliError(f"the daemon is not ready ({d})", "it is starting, reloading or "
                        "stopping: try again in a few seconds (`edge-agent status` says if it "
                        "runs)", EXIT_FAIL, reason)
    if reason == "busy":
        return CliError(f"the daemon is busy ({d})", "close other edge-agent commands (tail) "
                        "and try again", EXIT_FAIL, reason)
    if reason == "bad_argument":
        return CliError(d, "", EXIT_USAGE, reason)
    if reason == "bad_value":
        return CliError(f"refused: {d}", "give a value of the point's type (a number, on/off, "
                        "or one of its labels): `edge-agent read DEVICE POINT` shows one",
                        EXIT_USAGE, reason)
    if reason == "no_match":
        return CliError(f"{d}: the filters select nothing together", "drop one of them",
                        EXIT_USAGE, reason)
    if reason == "unsupported":
        return CliError(f"not supported: {d}", "", EXIT_USAGE, reason)
    if reason == "internal":
        return CliError(f"the daemon hit a bug ({d})", _JOURNAL, EXIT_FAIL, reason)
    if reason in ("permission_denied", "not_found", "os_error"):
        return CliError(f"the daemon could not do it: {d}", _JOURNAL, EXIT_FAIL, reason)
    if reason.startswith("unknown_"):
        return CliError(f"{reason.removeprefix('unknown_')} {d!r} is not known", "",
                        EXIT_USAGE, reason)
    return CliError(f"{reason}: {d}" if detail else reason, _JOURNAL, EXIT_FAIL, snake(reason))


class Explained(CliError):
    """A CliError made by ``refused`` / ``as_cli_error``, raised where the caller knows more
    than ``main`` would (a Modbus TCP device's host:port)."""

    def __init__(self, err: CliError) -> None:
        super().__init__(err.message, err.hint, err.exit, err.code, err.data)


def as_cli_error(exc: BaseException, socket: Path | None = None,
                 tcp: str = "") -> CliError | None:
    """The CliError for ``exc``; None when it is not something a user can be told about
    (a bug: main reports it as an internal error). ``tcp``: see ``refused``."""
    if isinstance(exc, CliError):
        return exc
    from edge_agent.control.client import ControlRefused, ControlUnavailable

    if isinstance(exc, ControlUnavailable):
        return unreachable(exc, socket)
    if isinstance(exc, ControlRefused | CommandRefused):
        return refused(exc.reason, exc.detail, tcp)
    if isinstance(exc, PortDenied):
        return not_permitted("open", exc.port, "dialout", "port_not_permitted")
    if tcp and isinstance(exc, BusClosed | FrameError | BusTimeout):
        name = ("BusClosed" if isinstance(exc, BusClosed) else
                "FrameError" if isinstance(exc, FrameError) else "BusTimeout")
        return refused(name, str(exc), tcp)
    if isinstance(exc, ConfigError):
        denied = unreadable(Path(exc.problems[0].file)) if exc.problems else None
        if denied is not None:  # not the file's fault: check-config would fail the same way
            return denied
        first = exc.problems[0] if exc.problems else exc
        more = f" (+{len(exc.problems) - 1} more)" if len(exc.problems) > 1 else ""
        path = exc.problems[0].file if exc.problems else "agent.toml"
        return CliError(f"{first}{more}", f"run: edge-agent check-config {path}", EXIT_USAGE,
                        "bad_config")
    if isinstance(exc, BusTimeout):
        return refused("BusTimeout", str(exc))
    if isinstance(exc, ModbusException):
        return refused("ModbusException", modbus_exception_text(exc.code))
    if isinstance(exc, CrcError | FrameError):
        return refused("FrameError", str(exc))
    if isinstance(exc, PortBusy):
        return CliError(f"the serial port is in use by another program ({exc})",
                        "is the daemon running (with another config), or another scan or "
                        "mbpoll? stop it first, e.g. sudo systemctl stop edge-agent", EXIT_FAIL,
                        "port_busy")
    if isinstance(exc, BusClosed):
        return refused("BusClosed", str(exc))
    if isinstance(exc, BusError):
        return refused("BusError", str(exc))
    if isinstance(exc, BoundsError):
        return refused("out_of_bounds", str(exc))
    if isinstance(exc, CodecError):
        return CliError(str(exc), "check the value against the point's type", EXIT_USAGE,
                        "bad_value")
    if isinstance(exc, EdgeAgentError):  # a code, never a Python class name
        return CliError(str(exc) or "failed", _JOURNAL, EXIT_FAIL, snake(type(exc).__name__))
    if isinstance(exc, TimeoutError):
        return CliError("the daemon did not answer in time", "busy bus or hung daemon; "
                        + _JOURNAL, EXIT_TIMEOUT, "timeout")
    if isinstance(exc, PermissionError):
        return CliError(f"permission denied: {exc.filename or exc}", "run with the rights "
                        "the file needs (sudo, or the edge-agent group)", EXIT_FAIL,
                        "permission_denied")
    if isinstance(exc, FileNotFoundError):
        return CliError(f"no such file: {exc.filename or exc}", "check the path", EXIT_USAGE,
                        "not_found")
    if isinstance(exc, IsADirectoryError | NotADirectoryError):
        return CliError(f"{exc.strerror}: {exc.filename}", "check the path", EXIT_USAGE,
                        "bad_path")
    if isinstance(exc, OSError):
        return CliError(f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""),
                        "", EXIT_FAIL, "os_error")
    return None
