"""A tiny TOML writer for the tests: enough for profiles and agent.toml built as dicts, so each test
can start from a valid document, break one thing, and write it to a real file."""

from __future__ import annotations

import json
import re
from typing import Any

_BARE = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(k: str) -> str:
    return k if _BARE.match(k) else json.dumps(k)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {type(v).__name__}")


def _is_aot(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def dumps(data: dict[str, Any], prefix: str = "") -> str:
    """Scalars and inline values first, then [sub.tables], then [[arrays.of.tables]]."""
    lines: list[str] = []
    tail: list[str] = []
    for k, v in data.items():
        name = f"{prefix}.{_key(k)}" if prefix else _key(k)
        if isinstance(v, dict):
            tail.append(f"\n[{name}]\n" + dumps(v, name))
        elif _is_aot(v):
            for item in v:
                # values inside an array-of-tables item are written inline
                body = "".join(f"{_key(ik)} = {_value(iv)}\n" for ik, iv in item.items())
                tail.append(f"\n[[{name}]]\n{body}")
        else:
            lines.append(f"{_key(k)} = {_value(v)}\n")
    return "".join(lines) + "".join(tail)
