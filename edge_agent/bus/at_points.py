"""Values of AtPoints: send ``point.command``, take the first answer line matching
``point.pattern``, group ``point.group`` (an index or a name), convert it to ``point.type``
(``engineering = raw * scale + offset`` for numbers; enum raw -> label).

``parse_point`` is pure (lines in, value out); ``read_point`` runs the command on a client.
Errors: AtError when no line matches (the module did not say what the profile expects);
CodecError when the matched text is not a value of the point's type (or the profile's pattern or
group is unusable), both naming the point and its command.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence
from typing import Protocol

from edge_agent.errors import AtError, CodecError
from edge_agent.profiles.model import AtPoint, DataType
from edge_agent.readings import Value

_INT_RANGE: dict[DataType, tuple[int, int]] = {
    DataType.INT16: (-(2**15), 2**15 - 1),
    DataType.UINT16: (0, 2**16 - 1),
    DataType.INT32: (-(2**31), 2**31 - 1),
    DataType.UINT32: (0, 2**32 - 1),
    DataType.INT64: (-(2**63), 2**63 - 1),
    DataType.UINT64: (0, 2**64 - 1),
    DataType.ENUM: (0, 2**16 - 1),
}
_TRUE = frozenset({"1", "true", "on", "yes"})
_FALSE = frozenset({"0", "false", "off", "no"})


class AtCommander(Protocol):
    async def command(self, cmd: str, timeout_s: float = ...) -> list[str]: ...


async def read_point(client: AtCommander, point: AtPoint, *, timeout_s: float = 5.0) -> Value:
    """Run the point's command on ``client`` and return its engineering value."""
    return parse_point(point, await client.command(point.command, timeout_s))


def _where(point: AtPoint) -> str:
    return f"point {point.name!r} ({point.command})"


@functools.lru_cache(maxsize=512)
def _compile(pattern: str) -> re.Pattern[str] | str:
    try:
        return re.compile(pattern)
    except re.error as exc:
        return str(exc)


def parse_point(point: AtPoint, lines: Sequence[str]) -> Value:
    rx = _compile(point.pattern)
    if isinstance(rx, str):
        raise CodecError(f"{_where(point)}: bad pattern {point.pattern!r}: {rx}")
    for line in lines:
        m = rx.search(line)
        if m is not None:
            break
    else:
        shown = "; ".join(lines)[:200]
        raise AtError(f"{_where(point)}: no answer line matches {point.pattern!r} in [{shown}]")
    group: int | str = int(point.group) if point.group.isdigit() else point.group
    try:
        text = m.group(group)
    except (IndexError, re.error):
        raise CodecError(f"{_where(point)}: pattern has no group {point.group!r}") from None
    if text is None:
        raise CodecError(f"{_where(point)}: group {point.group!r} did not match in {m.string!r}")
    return convert(point, text)


def _number_text(text: str) -> str:
    return text.strip().strip('"').strip()


def _to_int(point: AtPoint, text: str) -> int:
    t = _number_text(text)
    try:
        value = int(t, 16) if t[:2].lower() == "0x" else int(t, 10)
    except ValueError:
        try:
            f = float(t)
        except ValueError:
            raise CodecError(f"{_where(point)}: {text!r} is not an integer") from None
        if not f.is_integer():
            raise CodecError(f"{_where(point)}: {text!r} is not an integer") from None
        value = int(f)
    lo, hi = _INT_RANGE[point.type]
    if not lo <= value <= hi:
        raise CodecError(f"{_where(point)}: {value} outside {point.type} range {lo}..{hi}")
    return value


def convert(point: AtPoint, text: str) -> Value:
    """Matched text -> engineering value of ``point``."""
    t = point.type
    if t is DataType.STRING:
        return text
    if t is DataType.BOOL:
        word = _number_text(text).lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        raise CodecError(f"{_where(point)}: {text!r} is not a boolean (1/0, true/false, on/off)")
    if t is DataType.ENUM:
        raw = _to_int(point, text)
        for code, label in point.enum:
            if code == raw:
                return label
        raise CodecError(f"{_where(point)}: raw value {raw} is not in its enum")
    if t in (DataType.FLOAT32, DataType.FLOAT64):
        try:
            f = float(_number_text(text))
        except ValueError:
            raise CodecError(f"{_where(point)}: {text!r} is not a number") from None
        if not math.isfinite(f):
            raise CodecError(f"{_where(point)}: {text!r} is not a finite number")
        return f * point.scale + point.offset
    if t in _INT_RANGE:
        value = _to_int(point, text)
        if point.scale == 1 and point.offset == 0:
            return value
        return value * point.scale + point.offset
    raise CodecError(f"{_where(point)}: type {t} is not supported for AT points")
