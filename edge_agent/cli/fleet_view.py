"""The operator's fleet view, from every gateway's retained status (pure functions: the table,
the flags, the waves of a rollout).

Flags: ``silent`` (offline, or no status for ``silent_after_s``), ``behind`` (configuration
version below the target: given, else the highest version another gateway runs from a bundle
that addresses this one -- its selector matches this box's tags or its targets name it; a group
never makes another group behind), ``rolled_back`` (the last
rollout was rolled back and nothing newer runs), ``backlogged`` (outbox depth above
``backlog``), ``pinned`` (a technician pinned the local config), ``probation``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Thresholds:
    silent_after_s: float = 300.0
    backlog: int = 1000
    target_version: int | None = None


@dataclass(frozen=True, slots=True)
class Row:
    gateway: str
    status: dict[str, Any]
    flags: tuple[str, ...] = field(default=())

    @property
    def config(self) -> dict[str, Any]:
        c = self.status.get("config")
        return c if isinstance(c, dict) else {}

    @property
    def version(self) -> int:
        v = self.config.get("version", 0)
        return v if isinstance(v, int) else 0

    @property
    def tags(self) -> dict[str, str]:
        t = self.status.get("tags")
        return t if isinstance(t, dict) else {}

    @property
    def seen_ms(self) -> int:
        """When the gateway was last heard of: its status' time, or its chain witness' (a box
        publishes one with its batches) when newer -- a last will carries the time it connected.
        """
        return max(_int(self.status.get("ts_ms")), _int(self.status.get("witness_ms")))

    def seen_ago(self, now_ms: int | None = None) -> str:
        now_ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        return _age(self.seen_ms, now_ms)

    def addresses(self, other: Row) -> bool:
        """Does the bundle this gateway runs address ``other`` (as its status says)?"""
        a = self.config.get("addressed")
        if not isinstance(a, dict) or not a:
            return False
        sel, targets = a.get("selector"), a.get("targets")
        if isinstance(sel, dict) and sel:
            return all(other.tags.get(k) == v for k, v in sel.items())
        return isinstance(targets, list) and other.gateway in targets

    def json(self) -> dict[str, Any]:
        return {"gateway": self.gateway, "flags": list(self.flags), "seen_ms": self.seen_ms,
                **self.status}


def _int(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def rows(statuses: Mapping[str, Mapping[str, Any]], th: Thresholds,
         now_ms: int | None = None) -> list[Row]:
    now_ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    plain = [Row(gw, dict(s)) for gw, s in sorted(statuses.items())]
    out = []
    for r in plain:
        target = th.target_version if th.target_version is not None else max(
            (o.version for o in plain if o is not r and o.addresses(r)), default=0)
        s, flags = r.status, []
        age_s = (now_ms - _int(s.get("ts_ms"))) / 1000
        if s.get("state") != "online" or age_s > th.silent_after_s:
            flags.append("silent")
        if r.version < target:
            flags.append("behind")
        last = r.config.get("last_rollout")
        if isinstance(last, dict) and last.get("state") == "rolled_back" and \
                _int(last.get("version")) > r.version:
            flags.append("rolled_back")
        if _int(s.get("outbox_depth")) > th.backlog:
            flags.append("backlogged")
        if r.config.get("pinned"):
            flags.append("pinned")
        if r.config.get("state") == "probation":
            flags.append("probation")
        out.append(Row(r.gateway, s, tuple(flags)))
    return out


def _age(ms: int, now_ms: int) -> str:
    s = max(0, (now_ms - ms) // 1000)
    return f"{s}s" if s < 120 else f"{s // 60}m" if s < 7200 else f"{s // 3600}h"


def table_rows(rs: Iterable[Row], now_ms: int | None = None) -> list[list[Any]]:
    now_ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    out = []
    for r in rs:
        s, c = r.status, r.config
        dev = s.get("devices") if isinstance(s.get("devices"), dict) else {}
        clock = s.get("clock") if isinstance(s.get("clock"), dict) else {}
        last = c.get("last_rollout") if isinstance(c.get("last_rollout"), dict) else None
        out.append([
            r.gateway, s.get("state", "?"), r.seen_ago(now_ms),
            s.get("version", "?"),
            f"{r.version} {str(c.get('hash', ''))[:8]}" if c else "-",
            f"{dev.get('up', '?')}/{dev.get('total', '?')}" if dev else "-",
            s.get("outbox_depth", "-"),
            ("synced" if clock.get("synced") else "UNSYNCED") if clock else "-",
            f"v{last.get('version')} {last.get('state')}" if last else "-",
            ",".join(f"pinned ({str(c.get('pin_reason'))[:40]})"
                     if f == "pinned" and c.get("pin_reason") else f for f in r.flags) or "ok"])
    return out


HEADERS = ["gateway", "state", "seen", "agent", "config", "devices", "outbox", "clock",
           "last rollout", "flags"]


def plan_waves(candidates: list[str], canaries: list[str], wave_size: int) -> list[list[str]]:
    """Canaries first (one wave), then the others ``wave_size`` at a time, in order."""
    first = [g for g in candidates if g in canaries] or candidates[:1]
    rest = [g for g in candidates if g not in first]
    waves = [first] if first else []
    size = max(1, wave_size)
    waves += [rest[i:i + size] for i in range(0, len(rest), size)]
    return waves
