"""The parts of MicroPython's ``micropython`` module the node code uses."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., object])


def const(expr: T) -> T:
    return expr


def native(func: F) -> F:
    return func


def alloc_emergency_exception_buf(size: int) -> None:
    del size
