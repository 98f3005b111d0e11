"""The quality of a decoded value: the one place the poller decides GOOD, BAD or OUT_OF_RANGE.

- NaN or infinite floats are BAD (reason ``nan`` / ``inf``) and carry no value;
- a number outside the point's plausible range (``profiles.model.plausible_range``: the profile's
  ``valid_range``, or ``min``/``max`` of a writable point; engineering units, ends included) is
  OUT_OF_RANGE (reason ``below`` / ``above``) and keeps its value, so the consumer sees what the
  device said without taking it for a measurement;
- anything else is GOOD.

Only GOOD values are remembered as the "last known value" a quarantined device repeats as STALE.
"""

from __future__ import annotations

import math

from edge_agent.readings import Quality, Value

Range = tuple[float, float]


def judge(value: Value, valid: Range | None = None) -> tuple[Quality, str]:
    """(quality, reason) of a decoded ``value`` for a point plausible within ``valid``."""
    if isinstance(value, float) and not math.isfinite(value):
        return Quality.BAD, "nan" if math.isnan(value) else "inf"
    if valid is not None and isinstance(value, int | float) and not isinstance(value, bool):
        if value < valid[0]:
            return Quality.OUT_OF_RANGE, "below"
        if value > valid[1]:
            return Quality.OUT_OF_RANGE, "above"
    return Quality.GOOD, ""
