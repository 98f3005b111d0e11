"""How well a profile fits a unit found by ``scan``: by what its registers hold, not by whether
they answer (many devices answer any address, with zeros).

Every point of the profile is read (its planned requests) and judged:

* **identity** points -- strings (serial numbers, model names) and enums -- weigh most: a string
  must decode to printable text, an enum's raw value must be one of its labels;
* numeric points with a plausible range (``valid_range``, or a writable point's min/max) must lie
  inside it; a value that is exactly zero is plausible but weak evidence (unmapped space reads
  zero), so it counts a quarter;
* flags and unbounded numbers say nothing and are not counted.

A request the unit refuses (Modbus exception) or a value that cannot be decoded rules the
profile out. ``score`` is the evidence over the weight checked, 0..1; a profile "fits" when
nothing contradicts it and the score is at least ``FIT``.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from edge_agent.errors import BusError, CodecError, ModbusException
from edge_agent.profiles.codec import decode, raw_decode
from edge_agent.profiles.model import DataType, ModbusPoint, Profile, Table, plausible_range
from edge_agent.profiles.planner import plan

FIT = 0.5
IDENTITY_WEIGHT = 3.0
ZERO_CREDIT = 0.25

Reader = Callable[[Table, int, int], Awaitable[list[int]]]


@dataclass
class Fit:
    profile: str
    score: float = 0.0
    fits: bool = False
    plausible: list[str] = field(default_factory=list)  # point names
    implausible: list[str] = field(default_factory=list)  # "name=value"
    identity: dict[str, str] = field(default_factory=dict)  # e.g. serial_number: WM609453929
    refused: str = ""  # why the profile is ruled out

    def as_dict(self) -> dict[str, object]:
        return {"profile": self.profile, "score": round(self.score, 2), "fits": self.fits,
                "plausible": self.plausible, "implausible": self.implausible,
                "identity": self.identity, "refused": self.refused}

    def summary(self) -> str:
        if self.refused:
            return f"{self.profile}: no ({self.refused})"
        ident = ", ".join(f"{k} {v}" for k, v in self.identity.items())
        bad = f"; implausible: {', '.join(self.implausible[:3])}" if self.implausible else ""
        return (f"{self.profile} {self.score:.0%}" + (f" ({ident})" if ident else "") + bad)


def _printable(text: str) -> bool:
    t = text.strip("\x00 ")
    return len(t) >= 2 and all(0x20 <= ord(c) < 0x7F for c in t)


def judge(p: ModbusPoint, regs: list[int], fit: Fit) -> tuple[float, float]:
    """(evidence, weight) of one point's registers."""
    if p.type is DataType.STRING:
        text = str(raw_decode(DataType.STRING, p.order, regs, length=p.length)) \
            if _decodable(p, regs) else ""
        if _printable(text):
            fit.identity[p.name] = text.strip("\x00 ")
            fit.plausible.append(p.name)
            return IDENTITY_WEIGHT, IDENTITY_WEIGHT
        fit.implausible.append(f"{p.name}={text!r}")
        return 0.0, IDENTITY_WEIGHT
    if p.type is DataType.ENUM:
        raw = regs[0]
        labels = dict(p.enum)
        if raw in labels:
            fit.plausible.append(p.name)
            return (1.0 if raw else ZERO_CREDIT), 1.0
        fit.implausible.append(f"{p.name}={raw}")
        return 0.0, 1.0
    rng = plausible_range(p)
    if rng is None or p.type in (DataType.BIT, DataType.BOOL):
        return 0.0, 0.0
    value = decode(p, regs)
    if not isinstance(value, int | float) or isinstance(value, bool):
        return 0.0, 0.0
    if not math.isfinite(value) or not rng[0] <= value <= rng[1]:
        fit.implausible.append(f"{p.name}={value:g}")
        return 0.0, 1.0
    fit.plausible.append(p.name)
    return (1.0 if value != 0 else ZERO_CREDIT), 1.0


def _decodable(p: ModbusPoint, regs: list[int]) -> bool:
    try:
        decode(p, regs)
    except CodecError:
        return False
    return True


async def rank(name: str, profile: Profile, read: Reader) -> Fit:
    """Read every point of ``profile`` with ``read(table, address, count)`` and judge it."""
    fit = Fit(name)
    evidence = weight = 0.0
    for req in plan(profile.modbus_points, max_gap=profile.max_gap):
        try:
            regs = await read(req.table, req.address, req.count)
        except ModbusException as exc:
            fit.refused = f"refuses {req.table} {req.address}..{req.end - 1} (exception " \
                          f"{exc.code})"
            return fit
        except BusError as exc:
            fit.refused = f"no answer for {req.table} {req.address}..{req.end - 1} " \
                          f"({type(exc).__name__})"
            return fit
        for p in req.points:
            off = p.address - req.address
            chunk = list(regs[off:off + p.count])
            if not req.table.is_bits:
                try:
                    e, w = judge(p, chunk, fit)
                except CodecError as exc:
                    fit.implausible.append(f"{p.name}: {exc}")
                    e, w = 0.0, 1.0
                evidence += e
                weight += w
    fit.score = evidence / weight if weight else 0.0
    fit.fits = not fit.implausible and fit.score >= FIT
    return fit


def ordered(fits: list[Fit]) -> list[Fit]:
    """Best first: fitting ones by score, then the rest by score."""
    return sorted(fits, key=lambda f: (not f.fits, bool(f.refused), -f.score, f.profile))
