"""Values as a person reads them: rounded to the resolution the profile implies.

A point's decimals are its declared ``precision``, else what its scale and offset imply (raw
integers times ``scale = 0.1`` carry one decimal: ``-1081 * 0.1`` is shown ``-108.1``, not
``-108.10000000000001``). Float registers without a declared precision are shown with the digits
their width carries (7 significant digits for float32: ``0.4729``, not ``0.47290000319480896``).
Only what is shown is rounded; readings keep the value the codec decoded.
"""

from __future__ import annotations

import math

from edge_agent.profiles.model import DataType, Point

FLOATS = {DataType.FLOAT32: 7, DataType.FLOAT64: 15}  # significant digits the type carries
_INTEGERS = frozenset({DataType.INT16, DataType.UINT16, DataType.INT32, DataType.UINT32,
                       DataType.INT64, DataType.UINT64})


def _places(x: float) -> int:
    """Decimal places of ``x`` as written (0.1 → 1, 0.25 → 2, 10 → 0)."""
    if x == 0 or not math.isfinite(x):
        return 0
    from decimal import Decimal  # imported here: the daemon need not load decimal (~0.4 MiB)

    exp = Decimal(repr(float(x))).normalize().as_tuple().exponent
    return max(0, -exp) if isinstance(exp, int) else 0


def decimals(p: Point) -> int | None:
    """Decimal places to show for ``p``; None: not a fixed-point number (floats, text, flags)."""
    if p.precision is not None:
        return p.precision
    if p.type in _INTEGERS:
        return min(9, max(_places(p.scale), _places(p.offset)))
    return None


def significant(p: Point) -> int | None:
    """Significant digits of a float point without declared precision."""
    return FLOATS.get(p.type) if p.precision is None else None


def format_number(value: float, places: int | None = None, digits: int | None = None) -> str:
    """``value`` with ``places`` decimals, or ``digits`` significant digits (trailing zeros
    dropped), or as Python writes it."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if not math.isfinite(value):
        return str(value)
    if places is not None:
        text = f"{value:.{places}f}"
        return "0" + text[2:] if text.startswith("-0") and float(text) == 0 else text
    if digits is not None and value != 0:
        magnitude = math.floor(math.log10(abs(value)))
        if -5 <= magnitude < digits:
            text = f"{value:.{max(0, digits - 1 - magnitude)}f}"
            return text.rstrip("0").rstrip(".") if "." in text else text
        return f"{value:.{digits}g}"
    return repr(value) if isinstance(value, float) else str(value)


def rounded(value: object, places: int | None = None, digits: int | None = None) -> object:
    """``value`` rounded as ``format_number`` shows it, still a number (for JSON); NaN and
    infinities become None (JSON has no such numbers); anything else is returned as it is."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    if not math.isfinite(value):
        return None
    if isinstance(value, int) or (places is None and digits is None):
        return value
    return float(format_number(value, places, digits))


def format_value(value: object, places: int | None = None, digits: int | None = None,
                 unit: str = "") -> str:
    """What a technician reads: ``-108.1 dBm``, ``on``/``off`` for flags, text as it is."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, int | float):
        text = format_number(value, places, digits)
    else:
        text = str(value)
    return f"{text} {unit}" if unit and not isinstance(value, bool) else text
