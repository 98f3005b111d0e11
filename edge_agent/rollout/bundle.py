"""The configuration bundle: the managed part of a gateway config and every profile it references,
as one COSE_Sign1 signed by a configuration operator (docs/wire-format.md, "Configuration
bundles").

Payload: deterministic CBOR map with small-int keys::

    1 v      uint   format version (1)
    2 kind   tstr   "edge-agent/config" (a command payload has a bstr here: neither is ever
                    taken for the other)
    3 ver    uint   configuration version, >= 1, strictly increasing per gateway
    4 iat    int    issued at, Unix seconds
    5 nbf    int    not before, Unix seconds
    6 exp    int    expiry, Unix seconds (exp > nbf)
    7 gws    [tstr] target gateway ids                 -- exactly one of 7 and 8
    8 sel    {tstr: tstr} tag selector: every tag must match the box's [rollout] tags
    9 cfg    tstr   agent.toml without the box's local settings (``LOCAL_KEYS``)
    10 prof  {tstr: tstr} profile name -> profile TOML, every profile the devices reference
    11 win   uint   probation window, seconds (optional: ``DEFAULT_WINDOW_S``)
    12 ratio float  devices up after / before the change must be at least this (optional:
                    ``RATIO_FLOOR``; a bundle may only tighten it, up to 1.0)
    13 note  tstr   free text for the operators (optional)

The configuration hash (``content_hash``) covers 9 and 10: the same configuration has the same
hash whatever its version, targets or time window; the gateway reports it in its status.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass, field
from typing import Any

import cbor2

from edge_agent.errors import CommandRefused, VerifyError
from edge_agent.rollout.hashes import content_hash as content_hash
from edge_agent.rollout.hashes import profile_hash as profile_hash
from edge_agent.trust.cose import parse1

VERSION = 1
KIND = "edge-agent/config"
MAX_BUNDLE = 1 << 20  # bytes of the signed message
MAX_PROFILES = 256
MAX_TARGETS = 4096
DEFAULT_WINDOW_S = 60
MIN_WINDOW_S = 5
MAX_WINDOW_S = 3600
RATIO_FLOOR = 0.9
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # as config ids: safe file names
# set on the box only: a bundle naming one of these is refused (identity, trust anchors, where
# the state lives, the box's tags); "outbox.path" is the path key of [outbox]
LOCAL_KEYS = ("gateway_id", "profiles_dir", "state_dir", "runtime_dir", "keys", "rollout",
              "outbox.path")


@dataclass(frozen=True, slots=True)
class Bundle:
    version: int
    iat: int
    nbf: int
    exp: int
    config: str
    profiles: dict[str, str]
    targets: tuple[str, ...] = ()
    selector: dict[str, str] = field(default_factory=dict)
    window_s: int = DEFAULT_WINDOW_S
    min_up_ratio: float = RATIO_FLOOR
    note: str = ""

    @property
    def hash(self) -> bytes:
        return content_hash(self.config, self.profiles)

    def addressed_to(self, gateway_id: str, tags: dict[str, str]) -> bool:
        if self.targets:
            return gateway_id in self.targets
        return all(tags.get(k) == v for k, v in self.selector.items())

    def describe_target(self) -> str:
        if self.targets:
            return ",".join(self.targets)
        return ",".join(f"{k}={v}" for k, v in sorted(self.selector.items()))


def encode_bundle(b: Bundle) -> bytes:
    m: dict[int, Any] = {1: VERSION, 2: KIND, 3: b.version, 4: b.iat, 5: b.nbf, 6: b.exp,
                         9: b.config, 10: dict(b.profiles), 11: b.window_s,
                         12: float(b.min_up_ratio)}
    if b.targets:
        m[7] = list(b.targets)
    else:
        m[8] = dict(b.selector)
    if b.note:
        m[13] = b.note
    return cbor2.dumps(m, canonical=True)


class _Malformed(CommandRefused):
    """The payload is not a valid bundle (reason ``malformed``)."""

    def __init__(self, why: str) -> None:
        super().__init__("malformed", why)


def _get(m: dict[Any, Any], key: int, kind: type, name: str, *, required: bool = True) -> Any:
    if key not in m:
        if required:
            raise _Malformed(f"missing key {key} ({name})")
        return None
    v = m[key]
    if not isinstance(v, kind) or (kind is int and isinstance(v, bool)):
        raise _Malformed(f"key {key} ({name}) has type {type(v).__name__}, not {kind.__name__}")
    return v


def _str_map(v: dict[Any, Any], key: int, name: str, *, names: bool) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, x in v.items():
        if not isinstance(k, str) or not isinstance(x, str):
            raise _Malformed(f"key {key} ({name}): entries must be text -> text")
        if names and not NAME_RE.match(k):
            raise _Malformed(f"key {key} ({name}): {k[:80]!r} is not a valid name")
        out[k] = x
    return out


def decode_bundle(payload: bytes) -> Bundle:
    """A bundle payload, or CommandRefused('malformed') naming the key at fault."""
    try:
        m = cbor2.loads(payload)
    except Exception as exc:  # cbor2 raises many types on garbage
        raise _Malformed(f"payload is not CBOR ({type(exc).__name__})") from None
    if not isinstance(m, dict):
        raise _Malformed("payload is not a map")
    if m.get(1) != VERSION:
        raise _Malformed(f"unsupported format version {m.get(1)!r}")
    if m.get(2) != KIND:
        raise _Malformed(f"key 2 (kind) is {m.get(2)!r}, not {KIND!r}: not a configuration "
                         "bundle")
    version = _get(m, 3, int, "ver: the configuration version")
    iat = _get(m, 4, int, "iat: issued at")
    nbf, exp = _get(m, 5, int, "nbf: not before"), _get(m, 6, int, "exp: expiry")
    if version < 1:
        raise _Malformed("key 3 (ver: the configuration version) must be >= 1")
    if exp <= nbf:
        raise _Malformed("key 6 (exp: expiry) must be after key 5 (nbf: not before)")
    gws, sel = m.get(7), m.get(8)
    if (gws is None) == (sel is None):
        raise _Malformed("exactly one of key 7 (gateways) and key 8 (tag selector) is needed")
    targets: tuple[str, ...] = ()
    selector: dict[str, str] = {}
    if gws is not None:
        if not isinstance(gws, list) or not gws or len(gws) > MAX_TARGETS or not all(
                isinstance(g, str) and NAME_RE.match(g) for g in gws):
            raise _Malformed(f"key 7 (gateways) must be 1..{MAX_TARGETS} gateway ids")
        targets = tuple(gws)
    else:
        if not isinstance(sel, dict) or not sel:
            raise _Malformed("key 8 (tag selector) must be a non-empty map")
        selector = _str_map(sel, 8, "tag selector", names=False)
    config = _get(m, 9, str, "cfg: the managed agent.toml")
    prof = _get(m, 10, dict, "prof: the profiles")
    if len(prof) > MAX_PROFILES:
        raise _Malformed(f"key 10 (profiles): more than {MAX_PROFILES}")
    profiles = _str_map(prof, 10, "profiles", names=True)
    window = _get(m, 11, int, "win: the probation window", required=False)
    window = DEFAULT_WINDOW_S if window is None else window
    if not MIN_WINDOW_S <= window <= MAX_WINDOW_S:
        raise _Malformed(f"key 11 (probation window) {window} s is outside "
                         f"{MIN_WINDOW_S}..{MAX_WINDOW_S} s")
    ratio = m.get(12, RATIO_FLOOR)
    if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not math.isfinite(ratio):
        raise _Malformed("key 12 (min_up_ratio) must be a number")
    if not RATIO_FLOOR <= ratio <= 1.0:
        raise _Malformed(f"key 12 (min_up_ratio) {ratio} is outside {RATIO_FLOOR}..1.0: a "
                         "bundle may tighten the gateway's probation, never loosen it")
    note = _get(m, 13, str, "note", required=False) or ""
    return Bundle(version, iat, nbf, exp, config, profiles, targets, selector, window,
                  float(ratio), note)


def _utc(t: int) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def describe_signed(data: bytes) -> dict[str, Any]:
    """A signed bundle decoded for humans and operator tools (the signature is NOT checked);
    CommandRefused('malformed') when it is not one."""
    try:
        kid, _, payload, _ = parse1(data)
    except VerifyError as exc:
        raise CommandRefused("malformed", str(exc)) from None
    b = decode_bundle(payload)
    return {"version": b.version, "kid": kid.hex(), "targets": list(b.targets),
            "selector": b.selector, "issued": _utc(b.iat), "not_before": _utc(b.nbf),
            "expires": _utc(b.exp), "probation_s": b.window_s, "min_up_ratio": b.min_up_ratio,
            "hash": "sha256:" + b.hash.hex(), "note": b.note,
            "profiles": {n: profile_hash(t) for n, t in sorted(b.profiles.items())},
            "config": b.config}


def claimed_kid(message: bytes) -> bytes:
    """The kid a message's protected header names, read without trusting it (to name the key
    in the audit of a refusal); b"" when there is none."""
    try:
        return parse1(message)[0]
    except Exception:  # anything unparseable simply names no key
        return b""


def claimed_version(message: bytes) -> int:
    """The version a message says it carries, read without trusting anything (to correlate a
    refusal with what the operator sent); 0 when there is none."""
    try:
        m = cbor2.loads(parse1(message)[2])
        v = m.get(3) if isinstance(m, dict) and m.get(2) == KIND else None
    except Exception:  # anything unparseable simply has no version to echo
        return 0
    return v if type(v) is int and v > 0 else 0
