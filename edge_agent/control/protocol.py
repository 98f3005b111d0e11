"""Control API: one JSON object per line each way (UTF-8, ``\\n`` terminated).

Request:  {"op": "<name>", ...arguments}
Reply:    {"ok": true, "result": ...} or {"ok": false, "error": "<code>", "detail": "<text>"}

Every request line gets exactly one reply line (a stream: a head line, its items, then an end or
error line); nothing a client sends makes the daemon drop the connection without saying why.
A request line longer than ``MAX_LINE`` bytes, or nested deeper than ``MAX_DEPTH``, is refused
before it is parsed. Error codes (``ERRORS``) are stable; ``detail`` is for humans.

Ops and their arguments (``OPS``): status, devices, catalog (the names the running config
knows: devices with their points, buses, classes; ``edge_agent.config.catalog``),
read {device, point?},
modbus {bus, unit, table, address, count?, values?, timeout?, probe?} (raw registers through the
daemon's bus owner: ``edge_agent.service.commissioning``),
write {device, point, value}, buffer, command_results {id?, recent?} (stored signed results of
remote commands: those of one command id, else the newest ``recent``), tail {device?, point?,
class?} (stream), export {after_seq?} (stream, see ``edge_agent.service.export``), config_state
(which configuration runs: version, hash, pin, last rollout), config_pin {pin, reason?} (pin the
local config / unpin it: ``edge_agent.service.rollout``).
Streams: {"ok": true, "stream": true, ...} then one object per line; ``tail`` until the client
closes, ``export`` until {"end": {...}}. A stream that fails half-way ends with an error line.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

from edge_agent.errors import CommandRefused
from edge_agent.readings import Reading, Value

MAX_LINE = 64 * 1024
MAX_DEPTH = 8
MAX_CONNECTIONS = 16

ERRORS = {
    "bad_request": "not a JSON object with a string 'op', or malformed JSON",
    "request_too_long": f"request line over {MAX_LINE} bytes",
    "too_deep": f"JSON nested deeper than {MAX_DEPTH} levels",
    "bad_argument": "an argument is missing, unknown or of the wrong type",
    "unknown_op": "no such op",
    "busy": f"more than {MAX_CONNECTIONS} control connections at once",
    "not_found": "a file the op needed does not exist",
    "permission_denied": "the daemon may not access a file the op needed",
    "os_error": "another operating-system error",
    "timeout": "the op did not finish in time",
    "internal": "a bug in the daemon (logged with where it happened)",
    # ops also answer the typed refusals of the daemon: unknown_device, unknown_point,
    # out_of_bounds, bad_value (a value the point's type cannot take), not_writable,
    # not_running, BusTimeout, OutboxError, ...
}

# op -> {argument: (accepted types, required)}; None counts as absent for optional ones
_ANY_VALUE = (bool, int, float, str)
OPS: dict[str, dict[str, tuple[tuple[type, ...], bool]]] = {
    "status": {},
    "devices": {},
    "catalog": {},
    "modbus": {"bus": ((str,), True), "unit": ((int,), True), "table": ((str,), True),
               "address": ((int,), True), "count": ((int,), False), "values": ((list,), False),
               "timeout": ((int, float), False), "probe": ((bool,), False)},
    "buffer": {},
    "read": {"device": ((str,), True), "point": ((str,), False), "quality": ((bool,), False)},
    "write": {"device": ((str,), True), "point": ((str,), True), "value": (_ANY_VALUE, True)},
    "tail": {"device": ((str,), False), "point": ((str,), False), "class": ((str,), False)},
    "export": {"after_seq": ((int,), False)},
    "command_results": {"id": ((str,), False), "recent": ((int,), False)},
    "config_state": {},
    "config_pin": {"pin": ((bool,), True), "reason": ((str,), False)},
}
STREAMS = frozenset({"tail", "export"})


class RequestError(CommandRefused):
    """A request refused before it reached an op (``reason`` is one of ``ERRORS``)."""

    @property
    def code(self) -> str:
        return self.reason


def too_deep(line: bytes, limit: int = MAX_DEPTH) -> bool:
    """True when the JSON text nests arrays/objects deeper than ``limit`` (brackets inside
    strings do not count). Cheap for ordinary lines: they have few brackets at all."""
    if line.count(b"[") + line.count(b"{") <= limit:
        return False
    depth, in_str, esc = 0, False, False
    for b in line:
        if in_str:
            if esc:
                esc = False
            elif b == 0x5C:  # backslash
                esc = True
            elif b == 0x22:
                in_str = False
        elif b == 0x22:
            in_str = True
        elif b in (0x5B, 0x7B):
            depth += 1
            if depth > limit:
                return True
        elif b in (0x5D, 0x7D):
            depth -= 1
    return False


def check_request(req: object) -> dict[str, Any]:
    """The request as {op, args...} with every argument of the right type, or RequestError."""
    if not isinstance(req, dict) or not isinstance(req.get("op"), str):
        raise RequestError("bad_request", "request must be a JSON object with a string 'op'")
    op = req["op"]
    spec = OPS.get(op)
    if spec is None:
        raise RequestError("unknown_op", f"{op[:64]!r}; ops: {', '.join(sorted(OPS))}")
    out: dict[str, Any] = {"op": op}
    for name in req:
        if name != "op" and name not in spec:
            raise RequestError("bad_argument", f"{op}: unknown argument {str(name)[:64]!r}")
    for name, (types, required) in spec.items():
        value = req.get(name)
        if value is None:
            if required:
                raise RequestError("bad_argument", f"{op}: missing argument {name!r}")
            continue
        # bool is an int in Python: accept it only where bool is listed
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            want = " or ".join(t.__name__ for t in types)
            raise RequestError("bad_argument", f"{op}: argument {name!r} must be {want}, "
                               f"not {type(value).__name__}")
        out[name] = value
    return out


class ControlTarget(Protocol):
    """What the running daemon exposes to the control socket."""

    def status(self) -> dict[str, Any]: ...

    def devices(self) -> list[dict[str, Any]]: ...

    def catalog(self) -> dict[str, Any]: ...

    async def modbus(self, bus: str, unit: int, table: str, address: int, count: int | None,
                     values: list[int] | None, timeout: float | None,
                     probe: bool) -> dict[str, Any]: ...

    async def read_now(self, device: str, point: str | None = None) -> dict[str, Value]: ...

    async def read_judged(self, device: str, point: str | None = None) -> dict[str, Any]: ...

    async def local_write(self, device: str, point: str, value: Value) -> Value: ...

    def subscribe(self) -> AsyncIterator[Reading]: ...

    def buffer_stats(self) -> dict[str, Any]: ...

    def export(self, after_seq: int = 0) -> AsyncIterator[dict[str, Any]]: ...

    def command_results(self, cmd_id: str | None, recent: int) -> list[dict[str, Any]]: ...

    def config_state(self) -> dict[str, Any]: ...

    async def config_pin(self, pin: bool, reason: str = "") -> dict[str, Any]: ...


def reading_json(r: Reading) -> dict[str, Any]:
    return {
        "device": r.device, "point": r.point, "value": r.value, "unit": r.unit,
        "ts_ns": r.ts_ns, "quality": str(r.quality), "reason": r.reason, "alarm": r.alarm,
    }
