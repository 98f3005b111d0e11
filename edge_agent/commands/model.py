"""The command and result payloads (inside COSE_Sign1; see docs/wire-format.md §Commands).

Command payload: deterministic CBOR map with small-int keys::

    1 v       uint   format version (1)
    2 id      bstr   16-byte random nonce, unique per command
    3 iat     int    issued-at, Unix seconds
    4 exp     int    expiry, Unix seconds (exp > iat)
    5 ctr     uint   per-signer counter, strictly increasing
    6 gw      tstr   target gateway id
    7 act     tstr   "write" | "read" | "reload" | "ping"
    8 dev     tstr   device name (write, read)
    9 pt      tstr   point name (write; optional for read)
    10 val    any    value to write (bool, int, float or enum label)

Result payload (signed with the gateway key, published on <prefix>/<gw>/cmd/res)::

    1 v, 2 id (bstr, the command's id or h'' when it could not be parsed), 3 gw, 4 ok (bool),
    5 reason (tstr, "" when accepted), 6 t (Unix ns), 7 kid (bstr, signer of the command, or h''),
    8 value (confirmed value of a write / values of a read: map point → value)
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any

import cbor2

from edge_agent.errors import CommandRefused, VerifyError
from edge_agent.readings import Value

VERSION = 1


class Action(enum.StrEnum):
    WRITE = "write"
    READ = "read"
    RELOAD = "reload"
    PING = "ping"


@dataclass(frozen=True, slots=True)
class Command:
    id: bytes
    iat: int
    exp: int
    ctr: int
    gateway: str
    action: Action
    device: str = ""
    point: str = ""
    value: Value = None


def encode_command(cmd: Command) -> bytes:
    m: dict[int, Any] = {1: VERSION, 2: cmd.id, 3: cmd.iat, 4: cmd.exp, 5: cmd.ctr,
                         6: cmd.gateway, 7: str(cmd.action)}
    if cmd.device:
        m[8] = cmd.device
    if cmd.point:
        m[9] = cmd.point
    if cmd.action is Action.WRITE:
        m[10] = cmd.value
    return cbor2.dumps(m, canonical=True)


def _field(m: dict[Any, Any], key: int, kind: type | tuple[type, ...], name: str) -> Any:
    if key not in m:
        raise CommandRefused("malformed", f"missing key {key} ({name})")
    v = m[key]
    if not isinstance(v, kind) or (kind is int and isinstance(v, bool)):
        raise CommandRefused("malformed", f"key {key} ({name}) has type {type(v).__name__}")
    return v


def decode_command(payload: bytes) -> Command:
    """Parse a command payload; CommandRefused('malformed', ...) for anything but a valid one."""
    try:
        m = cbor2.loads(payload)
    except Exception as exc:  # cbor2 raises many types on garbage
        raise CommandRefused("malformed", f"payload is not CBOR ({type(exc).__name__})") from None
    if not isinstance(m, dict):
        raise CommandRefused("malformed", "payload is not a map")
    if m.get(1) != VERSION:
        raise CommandRefused("malformed", f"unsupported version {m.get(1)!r}")
    cid = _field(m, 2, bytes, "id")
    if not 8 <= len(cid) <= 64:
        raise CommandRefused("malformed", "id must be 8..64 bytes")
    iat = _field(m, 3, int, "iat")
    exp = _field(m, 4, int, "exp")
    ctr = _field(m, 5, int, "ctr")
    gw = _field(m, 6, str, "gw")
    act = _field(m, 7, str, "act")
    if ctr < 0 or exp <= iat:
        raise CommandRefused("malformed", "ctr must be >= 0 and exp > iat")
    try:
        action = Action(act)
    except ValueError:
        raise CommandRefused("malformed", f"unknown action {act!r}") from None
    device = m.get(8, "")
    point = m.get(9, "")
    if not isinstance(device, str) or not isinstance(point, str):
        raise CommandRefused("malformed", "device and point must be text")
    value = m.get(10)
    if action is Action.WRITE:
        if not device or not point:
            raise CommandRefused("malformed", "write needs device (8) and point (9)")
        if not isinstance(value, bool | int | float | str):
            raise CommandRefused("malformed", f"value has type {type(value).__name__}")
        if isinstance(value, float) and not math.isfinite(value):
            raise CommandRefused("malformed", "value is not finite")
    if action is Action.READ and not device:
        raise CommandRefused("malformed", "read needs device (8)")
    return Command(cid, iat, exp, ctr, gw, action, device, point, value)


@dataclass(frozen=True, slots=True)
class Result:
    id: bytes
    gateway: str
    ok: bool
    reason: str
    t_ns: int
    kid: bytes = b""
    value: Any = None


def encode_result(res: Result) -> bytes:
    m: dict[int, Any] = {1: VERSION, 2: res.id, 3: res.gateway, 4: res.ok, 5: res.reason,
                         6: res.t_ns, 7: res.kid}
    if res.value is not None:
        m[8] = res.value
    return cbor2.dumps(m, canonical=True)


def best_effort_id(message: bytes) -> bytes:
    """The command id of a COSE_Sign1 command message, for correlating a refusal, read without
    trusting anything else (b"" when there is none)."""
    try:
        from edge_agent.trust.cose import parse1

        payload = parse1(message)[2]
        m = cbor2.loads(payload)
        cid = m.get(2) if isinstance(m, dict) else None
        return cid if isinstance(cid, bytes) and len(cid) <= 64 else b""
    except Exception:  # anything unparseable simply has no id to echo
        return b""


def decode_result(payload: bytes) -> Result:
    """Parse a result payload (already signature-checked by the caller); VerifyError for anything
    that is not one."""
    try:
        m = cbor2.loads(payload)
    except Exception as exc:  # cbor2 raises many types on garbage
        raise VerifyError(f"result payload is not CBOR ({type(exc).__name__})") from None
    if not isinstance(m, dict) or m.get(1) != VERSION:
        raise VerifyError("not a command result payload")
    cid, gw, ok, reason, t_ns, kid = m.get(2), m.get(3), m.get(4), m.get(5), m.get(6), m.get(7, b"")
    if not (isinstance(cid, bytes) and isinstance(gw, str) and isinstance(ok, bool)
            and isinstance(reason, str) and type(t_ns) is int and isinstance(kid, bytes)):
        raise VerifyError("result payload: a required key is missing or has the wrong type")
    return Result(cid, gw, ok, reason, t_ns, kid, m.get(8))
