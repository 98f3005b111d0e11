"""Typed access to the integer-keyed map of a decoded batch payload, shared by the decoders of its
parts (``batch``, ``rows``, ``gap``, ``loss``): a missing or mistyped field raises ``BadField``
naming its path in the payload (``[12][3][4]``: key 12, row 3, element 4)."""

from __future__ import annotations

from typing import TypeVar

from edge_agent.errors import VerifyError

_T = TypeVar("_T")


class BadField(VerifyError):
    """A malformed payload field; ``batch.decode_payload`` reports it as a plain VerifyError."""

    def __init__(self, path: str, message: str) -> None:
        self.path, self.message = path, message
        super().__init__(f"payload{path}: {message}")


def int_field(m: dict[object, object], key: int, *, minimum: int | None = None) -> int:
    """``m[key]``, an integer (not a bool) of at least ``minimum`` when given."""
    v = m.get(key)
    if type(v) is not int:
        raise BadField(f"[{key}]", f"expected an integer, got {type(v).__name__}")
    if minimum is not None and v < minimum:
        raise BadField(f"[{key}]", f"{v} is below {minimum}")
    return v


def typed_field(m: dict[object, object], key: int, typ: type[_T]) -> _T:
    """``m[key]``, exactly of type ``typ``."""
    v = m.get(key)
    if type(v) is not typ:
        raise BadField(f"[{key}]", f"expected {typ.__name__}, got {type(v).__name__}")
    return v
