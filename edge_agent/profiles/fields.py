"""Typed reading of parsed TOML tables that collects every Problem instead of stopping at the first.

Used by the profile loader (``profiles.load``) and the agent.toml loader (``config.load``). A
``Table`` hands out typed values by key, remembers which keys it handed out, and ``finish()``
reports every key nobody asked for: unknown keys (with a difflib "did you mean" hint) and known
keys that do not apply here. Nothing is silently ignored or repaired.
"""

from __future__ import annotations

import enum
import math
import re
import tomllib
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from edge_agent.errors import Problem

E = TypeVar("E", bound=enum.Enum)

MISSING = object()  # what Table.raw returns for an absent key


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``"did you mean 'x'?"`` for the closest choice, or ``""``. The matcher is imported for the
    first mistake: a config that loads clean never needs it (the daemon does not hold it)."""
    from edge_agent.profiles.names import closest

    close = closest(word, choices, n=1)
    return f"did you mean {close[0]!r}?" if close else ""


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    if not _BARE_KEY.fullmatch(key):  # as TOML writes it: "" for an empty key, "a.b" quoted
        key = '"' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{path}.{key}" if path else key


def type_name(value: object) -> str:
    names = {bool: "boolean", int: "integer", float: "float", str: "string", dict: "table",
             list: "array"}
    return names.get(type(value), type(value).__name__)


class Problems:
    """The problem list of one file."""

    def __init__(self, file: str, sink: list[Problem] | None = None) -> None:
        self.file = file
        self.items: list[Problem] = sink if sink is not None else []

    def add(self, path: str, message: str, hint: str = "") -> None:
        self.items.append(Problem(self.file, path, message, hint))


def read_toml(path: Path, problems: Problems) -> dict[str, Any] | None:
    """Parse ``path``; on failure record where (line/column or byte offset) and return None."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        problems.add("", f"cannot read file: {exc.strerror or exc}")
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        problems.add("", f"not UTF-8 at byte offset {exc.start}")
        return None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        where = _LINE_COL.search(str(exc))
        offset = ""
        if where:
            line, col = int(where.group(1)), int(where.group(2))
            lines = text.splitlines(keepends=True)
            before = "".join(lines[: line - 1]) + (lines[line - 1][: col - 1]
                                                   if line - 1 < len(lines) else "")
            offset = f", byte offset {len(before.encode('utf-8'))}"
        problems.add("", f"invalid TOML: {exc}{offset}")
        return None


_LINE_COL = re.compile(r"at line (\d+), column (\d+)")


class Table:
    """One TOML table at key path ``path``."""

    # a thousand device tables are alive at once while agent.toml loads: no instance dict
    __slots__ = ("data", "path", "problems", "used")

    def __init__(self, data: dict[str, Any], path: str, problems: Problems) -> None:
        self.data = data
        self.path = path
        self.problems = problems
        self.used: set[str] = set()

    def at(self, key: str) -> str:
        return join(self.path, key)

    def has(self, key: str) -> bool:
        return key in self.data

    def error(self, key: str, message: str, hint: str = "") -> None:
        self.problems.add(self.at(key), message, hint)

    def raw(self, key: str) -> object:
        """The value (or ``MISSING``), marking the key used."""
        self.used.add(key)
        return self.data.get(key, MISSING)

    def _wrong(self, key: str, want: str, value: object) -> None:
        self.error(key, f"expected {want}, got {type_name(value)} {value!r}")

    def string(self, key: str, default: str | None = None, *, required: bool = False,
               nonempty: bool = True) -> str | None:
        v = self.raw(key)
        if v is MISSING:
            if required:
                self.error(key, "required key missing")
            return default
        if not isinstance(v, str):
            self._wrong(key, "a string", v)
            return default
        if nonempty and not v.strip():
            self.error(key, "must not be empty")
            return default
        return v

    def integer(self, key: str, default: int | None = None, *, required: bool = False,
                lo: int | None = None, hi: int | None = None) -> int | None:
        v = self.raw(key)
        if v is MISSING:
            if required:
                self.error(key, "required key missing")
            return default
        if isinstance(v, bool) or not isinstance(v, int):
            self._wrong(key, "an integer", v)
            return default
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            self.error(key, f"{v} is out of range {_range(lo, hi)}")
            return default
        return v

    def number(self, key: str, default: float | None = None, *, required: bool = False,
               lo: float | None = None, hi: float | None = None,
               lo_open: bool = False) -> float | None:
        v = self.raw(key)
        if v is MISSING:
            if required:
                self.error(key, "required key missing")
            return default
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            self._wrong(key, "a finite number", v)
            return default
        low_bad = lo is not None and (v <= lo if lo_open else v < lo)
        if low_bad or (hi is not None and v > hi):
            rng = f"> {lo}" if lo_open and hi is None else _range(lo, hi)
            self.error(key, f"{v} is out of range {rng}")
            return default
        return float(v)

    def boolean(self, key: str, default: bool = False) -> bool:
        v = self.raw(key)
        if v is MISSING:
            return default
        if not isinstance(v, bool):
            self._wrong(key, "true or false", v)
            return default
        return v

    def choice(self, key: str, kind: type[E], default: E | None = None, *,
               required: bool = False, allowed: Collection[E] | None = None) -> E | None:
        """A string that must be one of the enum's values (or of ``allowed``)."""
        v = self.raw(key)
        if v is MISSING:
            if required:
                self.error(key, "required key missing")
            return default
        options = [str(m.value) for m in (allowed if allowed is not None else list(kind))]
        if not isinstance(v, str):
            self._wrong(key, "one of " + ", ".join(options), v)
            return default
        if v not in options:
            shown = ", ".join(repr(o) for o in options)
            self.error(key, f"{v!r} is not one of {shown}", did_you_mean(v, options))
            return default
        return kind(v)

    def one_of(self, key: str, options: Collection[str], default: str | None = None, *,
               required: bool = False) -> str | None:
        """A string that must be one of ``options``."""
        v = self.raw(key)
        if v is MISSING:
            if required:
                self.error(key, "required key missing")
            return default
        shown = ", ".join(repr(o) for o in options)
        if not isinstance(v, str):
            self.error(key, f"expected one of {shown} (a string), got {type_name(v)} {v!r}",
                       did_you_mean(str(v), options))
            return default
        if v not in options:
            self.error(key, f"{v!r} is not one of {shown}", did_you_mean(v, options))
            return default
        return v

    def table(self, key: str) -> Table | None:
        v = self.raw(key)
        if v is MISSING:
            return None
        if not isinstance(v, dict):
            self._wrong(key, "a table", v)
            return None
        return Table(v, self.at(key), self.problems)

    def tables(self, key: str) -> list[Table]:
        """An array of tables (``[[key]]``)."""
        return list(self.each_table(key))

    def each_table(self, key: str, *, consume: bool = False) -> Iterator[Table]:
        """``tables(key)`` one at a time: a table the caller is done with is freed before the
        next is made (agent.toml's thousand device tables, their ``used`` sets, are never all
        alive at once: the load's transient peak is what the poller's objects fill later).
        ``consume`` (a document the caller parsed itself and drops after): each item's place in
        the array is emptied (None) as its table is made, so the parsed TOML shrinks as it is
        read instead of staying whole until the end."""
        v = self.raw(key)
        if v is MISSING:
            return
        if not isinstance(v, list):
            self._wrong(key, "an array of tables", v)
            return
        for i, item in enumerate(v):
            if isinstance(item, dict):
                if consume:
                    v[i] = None
                yield Table(item, join(self.at(key), i), self.problems)
                del item
            else:
                self.problems.add(join(self.at(key), i), f"expected a table, got {type_name(item)}")

    def finish(self, known: Collection[str], why: dict[str, str] | None = None, *,
               unknown_only: bool = False) -> None:
        """Report every key not used: not in ``known`` → unknown (did you mean); in ``known``
        but not used → does not apply here (``why[key]`` explains, if given). ``unknown_only``:
        the table was already found broken, report only keys that are not known at all."""
        for key in self.data:
            if key in self.used or (unknown_only and key in known):
                continue
            if key in known:
                reason = (why or {}).get(key, "")
                self.error(key, f"key {key!r} does not apply here" + (f": {reason}" if reason
                                                                       else ""))
            else:
                self.error(key, f"unknown key {key!r}", did_you_mean(key, known))


def _range(lo: float | None, hi: float | None) -> str:
    if lo is not None and hi is not None:
        return f"{lo}..{hi}"
    if lo is not None:
        return f">= {lo}"
    return f"<= {hi}"
