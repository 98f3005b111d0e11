"""Point values as a technician reads and writes them (read, write, tail).

A value is shown rounded to the resolution its profile implies, with its unit, next to the
poller's verdict on it (quality); ``read --json`` rounds the same way unless ``--exact``. A value
to write is checked for what the point can take at all (a number, on/off, one of its labels)
before the daemon checks its bounds.
"""

from __future__ import annotations

import math
import time
from typing import Any

from edge_agent.cli.common import EXIT_USAGE, CliError, table
from edge_agent.cli.humanize import age_of
from edge_agent.profiles.display import format_value

Judged = tuple[str, str]  # (quality, reason) as the poller decided it (readings.Quality values)


def quality_text(p: dict[str, Any] | None, judged: Judged | None) -> str:
    """The poller's verdict as a person reads it: the daemon's own for a read through it,
    ``poll.quality.judge``'s for ``--direct`` (the same rule: ``valid_range`` or a writable
    point's min/max, ``plausible_range`` in the catalog)."""
    quality, reason = judged or ("bad", "no value")
    if quality == "good":
        return "ok"
    if quality == "out_of_range":
        rng = (p or {}).get("plausible_range") or (p or {}).get("valid_range")
        bound = "" if not rng else f" {rng[0] if reason == 'below' else rng[1]:g}"
        return f"OUT OF RANGE ({reason}{bound})"
    return f"{quality.upper()} ({reason or 'no value'})"


def shown(p: dict[str, Any] | None, value: Any) -> str:
    """A value as a person reads it: rounded per the point's resolution, with its unit."""
    if p is None:
        return format_value(value)
    return format_value(value, p.get("decimals"), p.get("digits"), p.get("unit", ""))


def values_table(dev: dict[str, Any], values: dict[str, Any],
                  quality: dict[str, Judged], read_at: float | None = None) -> str:
    meta = {p["name"]: p for p in dev["points"]}
    at = time.time() if read_at is None else read_at
    rows = [[name, shown(meta.get(name), v), quality_text(meta.get(name), quality.get(name)),
             age_of(int(at * 1e9)) if v is not None else "-"]
            for name, v in sorted(values.items())]
    when = time.strftime("%H:%M:%S", time.localtime(at))
    head = f"{dev['name']} ({dev.get('profile', '?')}, bus {dev['bus']}, unit " \
           f"{dev['unit_id']}) read at {when}"
    return head + "\n" + table(["point", "value", "quality", "age"], rows)


def as_json(dev: dict[str, Any], values: dict[str, Any], exact: bool) -> dict[str, Any]:
    """``read --json``: each value rounded to its point's resolution like the table (a float32
    register's 0.029999999329447746 is 0.03); ``exact``: as decoded. NaN/inf are null."""
    from edge_agent.profiles.display import rounded

    if exact:
        return values
    meta = {p["name"]: p for p in dev["points"]}
    return {k: rounded(v, (meta.get(k) or {}).get("decimals"), (meta.get(k) or {}).get("digits"))
            for k, v in values.items()}


def reading_json(device: str, p: dict[str, Any] | None, point: str, value: Any,
                 judged: Judged, ts_ns: int, *, exact: bool, alarm: bool | None = None,
                 unit: str | None = None) -> dict[str, Any]:
    """One reading as ``tail --json`` and ``read --json --readings`` print it: the fields of
    the daemon's readings (``control.protocol.reading_json``: device, point, value, unit,
    ts_ns, quality, reason, alarm) with the wire format's quality words (good, stale, bad,
    out_of_range, unreadable), plus ``age_s``; the value rounded to the point's resolution
    like ``read`` shows it (``exact``: as decoded), NaN/inf as null."""
    from edge_agent.profiles.display import rounded

    meta = p or {}
    if alarm is None:
        alarm = bool((meta.get("report") or {}).get("alarm"))
    shown_value = value if exact else rounded(value, meta.get("decimals"), meta.get("digits"))
    return {"device": device, "point": point, "value": shown_value,
            "unit": meta.get("unit", "") if unit is None else unit, "ts_ns": ts_ns,
            "quality": judged[0], "reason": judged[1], "alarm": alarm,
            "age_s": round(max(0.0, time.time() - ts_ns / 1e9), 1)}


def readings_json(dev: dict[str, Any], values: dict[str, Any], quality: dict[str, Judged],
                  exact: bool, read_at: float | None = None) -> list[dict[str, Any]]:
    """``read --json --readings``: every value read, as ``reading_json``."""
    meta = {p["name"]: p for p in dev["points"]}
    ts = int((time.time() if read_at is None else read_at) * 1e9)
    return [reading_json(dev["name"], meta.get(k), k, v, quality.get(k) or ("bad", "no value"),
                         ts, exact=exact) for k, v in sorted(values.items())]


NUMERIC = frozenset({"int16", "uint16", "int32", "uint32", "int64", "uint64", "float32",
                      "float64"})


def takes(p: dict[str, Any]) -> str:
    """What a writable point takes, for a message: ``a number 0..100 %``, ``on or off``."""
    b = p.get("bounds") or {}
    if p["type"] in ("bool", "bit"):
        return "on or off (yes/no, true/false, 1/0)"
    if p.get("labels"):
        return "one of " + ", ".join(b.get("allowed") or p["labels"])
    if p["type"] in NUMERIC:
        lo, hi = b.get("min"), b.get("max")
        rng = f" {lo:g}..{hi:g}" if lo is not None and hi is not None else ""
        unit = f" {p['unit']}" if p.get("unit") and rng else ""
        return f"a number{rng}{unit}"
    return f"a {p['type']}"


ON, OFF = ("on", "yes", "true", "1"), ("off", "no", "false", "0")


def parse_for(device: str, p: dict[str, Any], text: str) -> Any:
    """The value ``text`` means for point ``p``: the words ``read`` shows are taken back (a flag
    ``yes``/``no`` as well as ``on``/``off``/``true``/``false``/``1``/``0``, a label in any
    case, a number with the point's unit after it: ``40 %``, ``40%``). CliError (exit 2) for a
    value the point cannot take whatever its bounds, naming what was typed; CliError (exit 1,
    ``out_of_bounds``, as the daemon would answer) for one outside the profile's bounds --
    before anything is asked or sent."""
    kind = p["type"]
    where = f"{device}.{p['name']}"
    word = text.strip()
    value: Any = word
    bad = ""
    if kind in ("bool", "bit"):
        if word.lower() in ON + OFF:
            value = word.lower() in ON
        else:
            bad = f"{text!r} is not on/off"
    elif p.get("labels"):
        same = [lb for lb in p["labels"] if lb.lower() == word.lower()]
        if same:
            value = same[0]
        else:
            bad = f"{text!r} is not one of its labels"
    elif kind in NUMERIC:
        unit = p.get("unit") or ""
        if unit and word.endswith(unit):
            word = word[: -len(unit)].strip()
        value = _number(word)
        if value is None:
            bad = f"{text!r} is not a number"
        elif isinstance(value, float) and not math.isfinite(value):
            bad = f"{text!r} is not a finite number"
    if bad:
        raise CliError(f"{bad}: {where} takes {takes(p)}", "", EXIT_USAGE, "bad_value")
    _bounds(where, p, value)
    return value


def _number(word: str) -> int | float | None:
    try:
        return int(word)
    except ValueError:
        pass
    try:
        return float(word)
    except ValueError:
        return None


def _bounds(where: str, p: dict[str, Any], value: Any) -> None:
    from edge_agent.cli.failure import refused
    from edge_agent.errors import BoundsError
    from edge_agent.profiles.codec import check_bounds
    from edge_agent.profiles.model import Bounds

    b = p.get("bounds")
    if not b:
        return
    bounds = Bounds(b.get("min"), b.get("max"), b.get("step"), tuple(b.get("allowed") or ()))
    try:
        check_bounds(p["name"], bounds, p["type"] == "enum", value)
    except BoundsError as exc:
        err = refused("out_of_bounds", str(exc))
        raise CliError(err.message, err.hint, err.exit, err.code) from None


def tail_line(rd: dict[str, Any], meta: dict[tuple[str, str], dict[str, Any]]) -> str:
    t = time.strftime("%H:%M:%S", time.localtime(rd["ts_ns"] / 1e9))
    p = meta.get((rd["device"], rd["point"]))
    q = "" if rd["quality"] == "good" else f"  [{rd['quality']} {rd['reason']}]".rstrip()
    alarm = "  ALARM" if rd.get("alarm") and rd["quality"] == "good" else ""
    return f"{t}  {rd['device']}.{rd['point']} = {shown(p, rd['value'])}{q}{alarm}"
