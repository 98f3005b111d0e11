"""MicroPython's ``time`` tick helpers on CPython: wrap-around counters, as on the boards."""

from __future__ import annotations

import time

TICKS_PERIOD = 1 << 30  # the ports' ticks_ms / ticks_us wrap at 2**30
_HALF = TICKS_PERIOD // 2
_MASK = TICKS_PERIOD - 1


def ticks_ms() -> int:
    return time.monotonic_ns() // 1_000_000 & _MASK


def ticks_us() -> int:
    return time.monotonic_ns() // 1_000 & _MASK


def ticks_cpu() -> int:
    return time.perf_counter_ns() & _MASK


def ticks_diff(ticks1: int, ticks2: int) -> int:
    """``ticks1 - ticks2`` across a wrap, as a signed value."""
    return ((ticks1 - ticks2 + _HALF) & _MASK) - _HALF


def ticks_add(ticks: int, delta: int) -> int:
    if not -_HALF <= delta < _HALF:
        raise OverflowError(f"ticks_add: delta {delta} is out of range")
    return (ticks + delta) & _MASK


def sleep_ms(ms: int) -> None:
    time.sleep(max(0, ms) / 1e3)


def sleep_us(us: int) -> None:
    time.sleep(max(0, us) / 1e6)
