"""Ranges of a point, in engineering units (``raw * scale + offset``, what readings carry):

- ``bounds``: what a writable point may be set to (``min``/``max``/``step``, ``allowed``);
- ``valid_range``: what a read-only numeric point can plausibly read (``valid_range = [lo, hi]``);
  a writable numeric point's plausible range is its ``min``/``max``;
- ``span``: what a type can represent at all, through the point's scale and offset.

A reading outside the plausible range is published with quality ``out_of_range`` (``poll.quality``).
"""

from __future__ import annotations

import math

from edge_agent.profiles.fields import MISSING, Table, did_you_mean
from edge_agent.profiles.model import Bounds, DataType

RAW_RANGE = {DataType.INT16: (-(1 << 15), (1 << 15) - 1), DataType.UINT16: (0, (1 << 16) - 1),
             DataType.INT32: (-(1 << 31), (1 << 31) - 1), DataType.UINT32: (0, (1 << 32) - 1),
             DataType.INT64: (-(1 << 63), (1 << 63) - 1), DataType.UINT64: (0, (1 << 64) - 1)}
FLOAT_MAX = {DataType.FLOAT32: 3.4028234663852886e38, DataType.FLOAT64: 1.7976931348623157e308}


def span(dtype: DataType, scale: float, offset: float) -> tuple[float, float] | None:
    """The lowest and highest engineering value ``dtype`` can carry, or None for non-numeric."""
    if dtype in RAW_RANGE:
        ends = [r * scale + offset for r in RAW_RANGE[dtype]]
    elif dtype in FLOAT_MAX:
        top = FLOAT_MAX[dtype]
        ends = [-top * abs(scale) + offset, top * abs(scale) + offset]
    else:
        return None
    lo, hi = sorted(ends)
    return lo, hi


def valid_range(t: Table, dtype: DataType) -> tuple[float, float] | None:
    """``valid_range = [lo, hi]`` of a read-only numeric point (the caller checks that it
    applies): two finite numbers, lo < hi, both representable by the type after scale/offset."""
    raw = t.raw("valid_range")
    if raw is MISSING:
        return None
    if (not isinstance(raw, list) or len(raw) != 2
            or not all(isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
                       for x in raw)):
        t.error("valid_range", f"expected [lo, hi], two finite numbers, got {raw!r}")
        return None
    lo, hi = float(raw[0]), float(raw[1])
    if not lo < hi:
        t.error("valid_range", f"lo {raw[0]} must be below hi {raw[1]}")
        return None
    scale, offset = scale_of(t)
    ends = span(dtype, scale, offset)
    if ends is not None:
        for i, v in enumerate((lo, hi)):
            if not ends[0] <= v <= ends[1]:
                t.problems.add(f"{t.at('valid_range')}[{i}]",
                               f"{raw[i]} can never be read: a {dtype.value} with scale {scale} "
                               f"and offset {offset} holds {ends[0]:g}..{ends[1]:g}")
                return None
    return lo, hi


def bounds(t: Table, dtype: DataType, enum: tuple[tuple[int, str], ...]) -> Bounds | None:
    if dtype is DataType.BOOL:
        return None
    if dtype is DataType.ENUM:
        raw = t.raw("allowed")
        labels = [lbl for _, lbl in enum]
        if raw is MISSING:
            t.problems.add(t.path, 'writable enum point has no bounds: set allowed = [labels]')
            return None
        if not isinstance(raw, list) or not raw or not all(isinstance(x, str) for x in raw):
            t.error("allowed", f"expected a non-empty array of enum labels, got {raw!r}")
            return None
        for i, label in enumerate(raw):
            if label not in labels:
                t.problems.add(f"{t.at('allowed')}[{i}]", f"{label!r} is not a label of enum",
                               did_you_mean(label, labels))
        return Bounds(allowed=tuple(raw))
    lo, hi = t.number("min"), t.number("max")
    step = t.number("step", lo=0, lo_open=True)
    if not (t.has("min") and t.has("max")):
        t.problems.add(t.path, "writable point has no bounds: set min and max")
        return None
    if lo is not None and hi is not None and lo > hi:
        t.error("min", f"min {lo} is greater than max {hi}")
    elif dtype in RAW_RANGE:
        scale, offset = scale_of(t)
        ends = span(dtype, scale, offset) or (-math.inf, math.inf)
        for key, v in (("min", lo), ("max", hi)):
            if v is not None and not ends[0] <= v <= ends[1]:
                t.error(key, f"{key} {v} cannot be written: a {dtype.value} with scale {scale} "
                             f"and offset {offset} holds {ends[0]:g}..{ends[1]:g}")
    return Bounds(min=lo, max=hi, step=step)


def scale_of(t: Table) -> tuple[float, float]:
    """The point's scale/offset as written (already validated by ``_scale``)."""
    scale, offset = t.data.get("scale", 1.0), t.data.get("offset", 0.0)
    ok = all(isinstance(x, int | float) and not isinstance(x, bool) for x in (scale, offset))
    return (float(scale or 1.0), float(offset)) if ok else (1.0, 0.0)
