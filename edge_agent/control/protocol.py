"""Control API: one JSON object per line each way.

Request:  {"op": "<name>", ...arguments}
Reply:    {"ok": true, "result": ...} or {"ok": false, "error": "<reason>", "detail": "..."}
Streams (op "tail"): {"ok": true, "stream": true} then one {"reading": {...}} per line until the
client closes the connection.

Ops: status, devices, read {device, point?}, write {device, point, value}, tail {device?, point?,
class?}, buffer, buffer_export {dir}.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

from edge_agent.readings import Reading, Value

MAX_LINE = 64 * 1024


class ControlTarget(Protocol):
    """What the running daemon exposes to the control socket."""

    def status(self) -> dict[str, Any]: ...

    def devices(self) -> list[dict[str, Any]]: ...

    async def read_now(self, device: str, point: str | None = None) -> dict[str, Value]: ...

    async def local_write(self, device: str, point: str, value: Value) -> Value: ...

    def subscribe(self) -> AsyncIterator[Reading]: ...

    def buffer_stats(self) -> dict[str, Any]: ...

    async def buffer_export(self, directory: str) -> dict[str, Any]: ...


def reading_json(r: Reading) -> dict[str, Any]:
    return {
        "device": r.device, "point": r.point, "value": r.value, "unit": r.unit,
        "ts_ns": r.ts_ns, "quality": str(r.quality), "reason": r.reason, "alarm": r.alarm,
    }
