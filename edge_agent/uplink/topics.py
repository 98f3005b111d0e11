"""MQTT topic names and the retained status payload of a gateway.

<prefix>/<gateway>/data     every signed batch (COSE_Sign1 bytes), QoS 1, not retained
<prefix>/<gateway>/status   retained JSON: birth ("online"), periodic, last will ("offline")
<prefix>/<gateway>/chain    retained signed chain witness (trust/witness.py), anti-rollback
<prefix>/<gateway>/config   signed configuration bundles in (rollout/), QoS 1
<prefix>/<gateway>/config/res  the gateway's signed rollout results, QoS 1
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass

import edge_agent
from edge_agent.errors import UplinkError

_FORBIDDEN = set("+#\0")


def _check_level(what: str, value: str, *, allow_slash: bool) -> str:
    if not value:
        raise UplinkError(f"uplink: {what} must not be empty")
    bad = _FORBIDDEN | (set() if allow_slash else {"/"})
    for i, ch in enumerate(value):
        if ch in bad:
            raise UplinkError(f"uplink: {what} {value!r} has {ch!r} at offset {i}")
    if allow_slash and (value.startswith("/") or value.endswith("/")):
        raise UplinkError(f"uplink: {what} {value!r} must not start or end with '/'")
    return value


@dataclass(frozen=True, slots=True)
class Topics:
    prefix: str
    gateway_id: str

    def __post_init__(self) -> None:
        _check_level("topic_prefix", self.prefix, allow_slash=True)
        _check_level("gateway id", self.gateway_id, allow_slash=False)

    @property
    def data(self) -> str:
        return f"{self.prefix}/{self.gateway_id}/data"

    @property
    def status(self) -> str:
        return f"{self.prefix}/{self.gateway_id}/status"

    @property
    def chain(self) -> str:
        return f"{self.prefix}/{self.gateway_id}/chain"

    @property
    def command(self) -> str:
        return f"{self.prefix}/{self.gateway_id}/cmd"

    @property
    def command_result(self) -> str:
        return f"{self.prefix}/{self.gateway_id}/cmd/res"

    @property
    def config(self) -> str:
        return f"{self.prefix}/{self.gateway_id}/config"

    @property
    def config_result(self) -> str:
        return f"{self.prefix}/{self.gateway_id}/config/res"


def status_payload(
    state: str,
    *,
    gateway_id: str,
    boot_id: str,
    outbox_depth: int | None = None,
    outbox_bytes: int | None = None,
    readings_dropped: int | None = None,
    now_ns: int | None = None,
    inventory: Mapping[str, object] | None = None,
) -> bytes:
    """Compact JSON; ``state`` is "online" (birth and periodic) or "offline" (will, shutdown).
    ``inventory`` (config version and hash, profile hashes, devices up/total, clock, last
    rollout: service/rollout.py) adds its keys without replacing the ones above."""
    doc: dict[str, object] = {
        "state": state,
        "gateway": gateway_id,
        "version": edge_agent.__version__,
        "boot_id": boot_id,
        "ts_ms": (time.time_ns() if now_ns is None else now_ns) // 1_000_000,
    }
    if outbox_depth is not None:
        doc["outbox_depth"] = outbox_depth
    if outbox_bytes is not None:
        doc["outbox_bytes"] = outbox_bytes
    if readings_dropped is not None:
        doc["readings_dropped"] = readings_dropped
    for key, value in (inventory or {}).items():
        doc.setdefault(key, value)
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
