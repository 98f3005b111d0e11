"""Numbers as a technician reads them: sizes in KiB/MiB/GiB, durations in s/min/h/d, ages, and a
key/value report (``status``, ``buffer``) where every key says by its suffix what it holds
(``*_bytes`` a size, ``*_s`` seconds, ``*_ns`` a wall-clock time in ns). JSON keeps raw values."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def size(n: float | None) -> str:
    if n is None:
        return "-"
    v = float(n)
    for unit in _UNITS:
        if abs(v) < 1024 or unit == _UNITS[-1]:
            return f"{int(v)} B" if unit == "B" else f"{v:.1f} {unit}"
        v /= 1024
    return f"{n} B"  # not reached


def duration(s: float | None) -> str:
    if s is None:
        return "-"
    s = float(s)
    if s < 10:
        return f"{s:.1f} s"
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    if s < 2 * 86400:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} d"


def age_of(ts_ns: int | None, now_s: float | None = None) -> str:
    """``12 s ago`` for a wall-clock time in ns; ``never`` for none."""
    if not ts_ns:
        return "never"
    now = time.time() if now_s is None else now_s
    ago = max(0.0, now - ts_ns / 1e9)
    return "just now" if ago < 1 else f"{duration(ago)} ago"


def scalar(key: str, v: Any) -> str:
    if v is None or v == "":
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int | float):
        if key.endswith("_bytes") or key == "bytes" or key.startswith("bytes_"):
            return size(v)
        if key.endswith("_s"):
            return duration(v)
        if key.endswith("_ns"):
            return age_of(int(v))
        if isinstance(v, float):
            return f"{v:g}"
    return str(v)


def _label(key: str) -> str:
    for suffix in ("_bytes", "_s", "_ns"):
        if key.endswith(suffix) and key != suffix.lstrip("_"):
            return key[: -len(suffix)]
    return key


def report(obj: Mapping[str, Any], indent: int = 0, width: int = 22) -> list[str]:
    """A nested mapping as aligned ``key  value`` lines, sections indented."""
    pad = " " * indent
    lines: list[str] = []
    for k, v in obj.items():
        if isinstance(v, Mapping):
            continue
        text = (", ".join(map(str, v)) if v else "-") if isinstance(v, list) else scalar(k, v)
        lines.append(f"{pad}{_label(k):<{width - indent}} {text}")
    for k, v in obj.items():
        if isinstance(v, Mapping):
            lines.append(f"{pad}{k}:")
            lines += report(v, indent + 2, width)
    return lines
