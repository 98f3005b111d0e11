"""argparse ``type=`` functions: a bad value becomes the one-line usage error of its option
(``edge-agent scan: --units: 'abc' is not a unit range ...``), never "invalid _units value"."""

from __future__ import annotations

import argparse
import datetime as dt
import time


def count(text: str) -> int:
    """A whole number >= 0."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"{n} is negative")
    return n


def unit_range(text: str) -> range:
    """Modbus unit ids: ``7``, ``5-12``, ``1-247``."""
    lo, _, hi = text.partition("-")
    try:
        a, b = int(lo), int(hi or lo)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a unit range (e.g. 1-247, 5-12 "
                                          "or 7)") from None
    if not 1 <= a <= b <= 247:
        raise argparse.ArgumentTypeError(f"{text!r}: unit ids lie within 1-247, low-high")
    return range(a, b + 1)


def seconds(text: str) -> float:
    """A positive duration in seconds."""
    try:
        s = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not s > 0 or s != s or s == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: give a positive number of seconds")
    return s


def integer(text: str) -> int:
    """An integer in decimal or 0x hex (register addresses, unit ids, raw values)."""
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer (decimal or 0x hex)"
                                         ) from None


def when(text: str) -> int:
    """A moment as Unix seconds: digits, ``+SECONDS`` (from now) or ISO 8601 (UTC when it has
    no offset)."""
    if text.startswith("+") and text[1:].isdigit():
        return int(time.time()) + int(text[1:])
    if text.isdigit():
        return int(text)
    try:
        t = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give Unix seconds, +SECONDS or ISO 8601 "
                                         "(2025-06-01T02:00:00Z)") from None
    return int((t if t.tzinfo else t.replace(tzinfo=dt.UTC)).timestamp())


def key_value(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` (a tag)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE")
    return key, value
