"""argparse ``type=`` functions: a bad value becomes the one-line usage error of its option
(``edge-agent scan: --units: 'abc' is not a unit range ...``), never "invalid _units value".
Numbers are checked for what they mean, not only for their syntax: a baud rate of 0, a scale of
0, nan or inf, a unit id of 999 are refused here, before anything divides by them or sends them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import time
from collections.abc import Callable

MAX_BAUD = 4_000_000  # fastest USB RS-485 adapters (FTDI: 3 Mbaud); termios knows no more
INT64_MAX = 2**63 - 1  # what every counter, seed and id we pass on fits in
MAX_SECONDS = 366 * 86400  # any wait, timeout or duration


def _int(text: str, what: str, base: int = 10) -> int:
    """``int(text)``, ASCII digits only (Python's int() also takes '٣' and '1_000')."""
    t = text.strip()
    if not t.isascii() or "_" in t:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
    try:
        return int(t, base)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None


def whole(lo: int = 0, hi: int = INT64_MAX) -> Callable[[str], int]:
    """A type for whole numbers ``lo``..``hi``."""

    def whole_number(text: str) -> int:
        n = _int(text, "a whole number")
        if not lo <= n <= hi:
            raise argparse.ArgumentTypeError(f"{text}: give a whole number within "
                                             f"{lo:,}..{hi:,}")
        return n

    return whole_number


def count(text: str) -> int:
    """A whole number >= 0."""
    n = _int(text, "a whole number")
    if n < 0:
        raise argparse.ArgumentTypeError(f"{n} is negative")
    if n > INT64_MAX:
        raise argparse.ArgumentTypeError(f"{text}: too large")
    return n


def unit_range(text: str) -> range:
    """Modbus unit ids: ``7``, ``5-12``, ``1-247``."""
    lo, _, hi = text.partition("-")
    what = "a unit range (e.g. 1-247, 5-12 or 7)"
    try:
        a, b = _int(lo, what), _int(hi or lo, what)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
    if not 1 <= a <= b <= 247:
        raise argparse.ArgumentTypeError(f"{text!r}: unit ids lie within 1-247, low-high")
    return range(a, b + 1)


def _number(text: str, what: str) -> float:
    t = text.strip()
    if not t.isascii() or "_" in t:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
    try:
        x = float(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
    if not math.isfinite(x):
        raise argparse.ArgumentTypeError(f"{text!r}: give a finite number")
    return x


def number(lo: float, hi: float) -> Callable[[str], float]:
    """A type for finite numbers ``lo``..``hi``."""

    def finite_number(text: str) -> float:
        x = _number(text, "a number")
        if not lo <= x <= hi:
            raise argparse.ArgumentTypeError(f"{text}: give a number within {lo:g}..{hi:g}")
        return x

    return finite_number


def baud(text: str) -> int:
    """A line speed: a whole number of baud, 50..4,000,000."""
    n = _int(text, "a baud rate (e.g. 9600, 19200)")
    if not 50 <= n <= MAX_BAUD:
        raise argparse.ArgumentTypeError(f"{text}: a baud rate lies within 50..{MAX_BAUD:,} "
                                         "(e.g. 9600, 19200)")
    return n


def unit_id(text: str) -> int:
    """A Modbus unit id, 0..247 (0: broadcast, writes only: checked by the request)."""
    n = integer(text)
    if not 0 <= n <= 247:
        raise argparse.ArgumentTypeError(f"{text}: unit ids are 1..247")
    return n


def address(text: str) -> int:
    """A 0-based register or bit address, 0..65535 (decimal or 0x hex)."""
    n = integer(text)
    if not 0 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"{text}: addresses are 0..65535 (0-based; a "
                                         "manual's 40001 is holding 0)")
    return n


def scale(text: str) -> float:
    """A finite, non-zero multiplier (engineering = raw x scale)."""
    x = _number(text, "a number (e.g. 0.1)")
    if x == 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a scale of 0 maps every raw value to 0; "
                                         "give e.g. 0.1 or 1")
    if not 1e-9 <= abs(x) <= 1e9:
        raise argparse.ArgumentTypeError(f"{text!r}: a scale lies within 1e-9..1e9 (either "
                                         "sign), e.g. 0.1 or 1000")
    return x


def seconds(text: str) -> float:
    """A positive duration in seconds."""
    s = _number(text, "a number of seconds")
    if not 0 < s <= MAX_SECONDS:
        raise argparse.ArgumentTypeError(f"{text!r}: give a positive number of seconds, at "
                                         "most a year (e.g. 0.5, 30, 3600)")
    return s


def integer(text: str) -> int:
    """An integer in decimal or 0x hex (register addresses, unit ids, raw values)."""
    what = "an integer (decimal or 0x hex)"
    n = _int(text, what, 0)
    if abs(n) > INT64_MAX:
        raise argparse.ArgumentTypeError(f"{text}: too large")
    return n


def when(text: str) -> int:
    """A moment as Unix seconds: digits, ``+SECONDS`` (from now) or ISO 8601 (UTC when it has
    no offset)."""
    if text.startswith("+") and text[1:].isascii() and text[1:].isdigit():
        return int(time.time()) + min(int(text[1:]), 100 * 366 * 86400)
    if text.isascii() and text.isdigit() and len(text) <= 12:
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
