"""The service's systemd unit as systemd reads it, as far as edge-agent has to know it.

``parse_unit(text)`` splits a unit file into sections of ordered (key, value) pairs (continuation
lines joined, comments dropped). ``ServiceUnit`` is the [Service] section of a unit and its
drop-ins, in the order systemd applies them, with the answers built on it:

* ``where(path)``: what the service can do at ``path`` inside its sandbox -- write (the state,
  runtime, cache and logs directories, ReadWritePaths=), only read (ProtectSystem=,
  ReadOnlyPaths=), not see (ProtectHome=, InaccessiblePaths=), or write privately (PrivateTmp=:
  gone when the service stops, invisible to the CLI and to node_exporter); the most specific
  path wins, as systemd's mounts do;
* ``syscall_allowed(name)``: SystemCallFilter= merged by systemd's rules (groups resolved with
  ``systemd-analyze syscall-filter``), ProtectClock= included -- the clock's source inside the
  unit depends on whether ``adjtimex`` is allowed (platform/clock.py).

``installed_unit()`` finds the unit the way `edge-agent doctor` needs it: a file named on the
command line, else edge-agent.service in systemd's unit directories with its drop-ins; None when
edge-agent is not installed as a service. ``environment(pairs)``: what its Environment= lines
set (the tests' sandbox harness and the benchmarks run the agent with it). The tests' sandbox
harness (tests/sandbox/unit.py) builds on the same parser.
"""

from __future__ import annotations

import errno as errno_mod
import functools
import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from edge_agent.errors import ConfigError, Problem

UNIT = "edge-agent.service"
UNIT_DIRS = (Path("/etc/systemd/system"), Path("/run/systemd/system"),
             Path("/usr/local/lib/systemd/system"), Path("/usr/lib/systemd/system"),
             Path("/lib/systemd/system"))
HOME_DIRS = ("/home", "/root", "/run/user")  # ProtectHome=
TMP_DIRS = ("/tmp", "/var/tmp")  # PrivateTmp=
# what a directory setting makes writable inside the unit (ConfigurationDirectory= stays read-only)
WRITABLE_DIRS = {"StateDirectory": "/var/lib", "RuntimeDirectory": "/run",
                 "CacheDirectory": "/var/cache", "LogsDirectory": "/var/log"}
# where systemd-analyze is missing: the one group whose members decide the clock's source
CLOCK_GROUP = ("adjtimex", "clock_adjtime", "clock_adjtime64", "clock_settime",
               "clock_settime64", "settimeofday")

WRITE, READ_ONLY, HIDDEN, PRIVATE = "write", "read-only", "hidden", "private"


def parse_unit(text: str, source: str = "unit") -> dict[str, list[tuple[str, str]]]:
    """Sections of a unit file, each an ordered list of (key, value); ConfigError naming the
    line for a line outside a section or without '='."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    pending = ""
    for number, raw in enumerate(text.splitlines(), 1):
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        if current is None or "=" not in line:
            raise ConfigError([Problem(source, f"line {number}", f"not a unit line: {raw!r}",
                                       "KEY=VALUE inside a [Section]")])
        key, _, value = line.partition("=")
        current.append((key.strip(), value.strip()))
    return sections


def environment(service: list[tuple[str, str]], source: str = "unit") -> dict[str, str]:
    """What Environment= lines of a [Service] section (``parse_unit``'s pairs) set, as systemd
    reads them: whitespace-separated VAR=VALUE assignments, quotes grouping, the later
    assignment winning, an empty Environment= resetting the list."""
    env: dict[str, str] = {}
    for key, value in service:
        if key != "Environment":
            continue
        if not value:
            env.clear()
        for word in shlex.split(value):
            name, eq, val = word.partition("=")
            if not eq or not name:
                raise ConfigError([Problem(source, "Service.Environment",
                                           f"not an assignment: {word!r}", "VAR=VALUE")])
            env[name] = val
    return env


@functools.cache
def syscall_groups() -> dict[str, tuple[str, ...]]:
    """Every ``@group`` the installed systemd knows and its members (system calls or nested
    groups), from ``systemd-analyze syscall-filter``; {} where it is not installed."""
    tool = shutil.which("systemd-analyze")
    if tool is None:
        return {}
    try:
        out = subprocess.run([tool, "syscall-filter"], capture_output=True, text=True,
                             timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    groups: dict[str, list[str]] = {}
    members: list[str] | None = None
    for line in out.splitlines():
        if line.startswith("@"):
            members = groups.setdefault(line.strip(), [])
        elif line.startswith("    ") and members is not None:
            item = line.strip()
            if item and not item.startswith("#"):
                members.append(item)
    return {k: tuple(v) for k, v in groups.items()}


def expand(name: str, groups: dict[str, tuple[str, ...]] | None = None) -> set[str]:
    """The system calls a filter item stands for: a name, or a ``@group`` resolved recursively.
    Without systemd-analyze only @clock is known (other groups expand to nothing)."""
    groups = syscall_groups() if groups is None else groups
    if not name.startswith("@"):
        return {name}
    if name not in groups:
        if not groups:
            return set(CLOCK_GROUP) if name == "@clock" else set()
        raise ConfigError([Problem("SystemCallFilter", name, "unknown system call group",
                                   "systemd-analyze syscall-filter lists them")])
    out: set[str] = set()
    for member in groups[name]:
        out |= expand(member, groups)
    return out


def _errno(name: str) -> int:
    if name.isdigit():
        return int(name)
    number = getattr(errno_mod, name, None)
    if not isinstance(number, int):
        raise ConfigError([Problem("SystemCallFilter", name, "unknown errno name")])
    return number


@dataclass
class SyscallFilter:
    """SystemCallFilter= after systemd's merge: an allow list (everything else gets the error
    number) or a deny list. ``names`` maps each system call to its own errno, or None for the
    default (SystemCallErrorNumber=)."""

    allow_list: bool = False
    names: dict[str, int | None] = field(default_factory=dict)

    @classmethod
    def merge(cls, lines: list[str], groups: dict[str, tuple[str, ...]] | None = None
              ) -> SyscallFilter | None:
        """systemd's config_parse_syscall_filter: the first line decides allow or deny list (an
        allow list starts with @default); later lines add to or take from the set -- an inverted
        (``~``) line takes from an allow list and adds to a deny list; an empty line resets."""
        f: SyscallFilter | None = None
        for value in lines:
            if not value:
                f = None
                continue
            invert = value.startswith("~")
            if invert:
                value = value[1:]
            if f is None:
                f = cls(allow_list=not invert)
                if f.allow_list:
                    for s in expand("@default", groups):
                        f.names[s] = None
            remove = invert == f.allow_list
            for item in value.split():
                name, _, err = item.partition(":")
                number = _errno(err) if err else None
                for s in expand(name, groups):
                    if remove:
                        f.names.pop(s, None)
                    else:
                        f.names[s] = number
        return f


def _bool(value: str, default: bool = False) -> bool:
    v = value.lower()
    if v in ("yes", "true", "on", "1"):
        return True
    if v in ("no", "false", "off", "0"):
        return False
    return default


def _inside(path: str, top: str) -> bool:
    return top == "/" or path == top or path.startswith(top.rstrip("/") + "/")


@dataclass(frozen=True)
class ServiceUnit:
    """The [Service] entries of a unit and its drop-ins, in order; ``source`` says where from."""

    entries: tuple[tuple[str, str], ...]
    source: str

    @classmethod
    def from_texts(cls, texts: list[tuple[str, str]], source: str) -> ServiceUnit:
        """``texts``: (file name, text) of the unit, then of its drop-ins."""
        entries: list[tuple[str, str]] = []
        for name, text in texts:
            entries += parse_unit(text, name).get("Service", [])
        return cls(tuple(entries), source)

    @classmethod
    def load(cls, path: Path, drop_ins: list[Path] | None = None) -> ServiceUnit:
        files = [path, *(drop_ins or [])]
        return cls.from_texts([(str(p), p.read_text()) for p in files], str(path))

    def last(self, key: str, default: str | None = None) -> str | None:
        found = [v for k, v in self.entries if k == key]
        return found[-1] if found else default

    def every(self, key: str) -> list[str]:
        """The values of a list setting: each line adds its words, an empty line resets."""
        out: list[str] = []
        for k, v in self.entries:
            if k == key:
                out = out + v.split() if v else []
        return out

    def flag(self, key: str, default: bool = False) -> bool:
        value = self.last(key)
        return default if value is None else _bool(value, default)

    # -- the file system the service sees ----------------------------------------------------

    def rules(self) -> list[tuple[str, str, str]]:
        """(path, what the service may do there, the setting that says so)."""
        out: list[tuple[str, str, str]] = []
        protect = (self.last("ProtectSystem") or "no").lower()
        if protect == "strict":
            out.append(("/", READ_ONLY, "ProtectSystem=strict"))
        elif protect in ("yes", "true", "full"):
            for top in ("/usr", "/boot", "/efi") + (("/etc",) if protect == "full" else ()):
                out.append((top, READ_ONLY, f"ProtectSystem={protect}"))
        home = (self.last("ProtectHome") or "no").lower()
        if home in ("yes", "true", "tmpfs"):
            out += [(h, HIDDEN, f"ProtectHome={home}") for h in HOME_DIRS]
        elif home == "read-only":
            out += [(h, READ_ONLY, "ProtectHome=read-only") for h in HOME_DIRS]
        if self.flag("PrivateTmp"):
            out += [(t, PRIVATE, "PrivateTmp=yes") for t in TMP_DIRS]
        for key, base in WRITABLE_DIRS.items():
            out += [(f"{base}/{d}", WRITE, f"{key}={d}") for d in self.every(key)]
        for key, kind in (("ReadWritePaths", WRITE), ("ReadOnlyPaths", READ_ONLY),
                          ("InaccessiblePaths", HIDDEN)):
            for p in self.every(key):
                out.append((os.path.normpath(p.lstrip("-+")), kind, f"{key}={p}"))
        return out

    def where(self, path: Path) -> tuple[str, str]:
        """(WRITE | READ_ONLY | HIDDEN | PRIVATE, the setting that decides) for ``path`` inside
        the unit: the most specific rule wins; none: writable (no sandbox there)."""
        p = os.path.normpath(str(path))
        best: tuple[str, str, str] | None = None
        for rule in self.rules():
            if _inside(p, rule[0]) and (best is None or len(rule[0]) >= len(best[0])):
                best = rule
        return (WRITE, "no restriction") if best is None else (best[1], best[2])

    # -- system calls ------------------------------------------------------------------------

    def syscall_allowed(self, name: str) -> bool:
        """May the service make system call ``name`` (argument filters aside)?"""
        if self.flag("ProtectClock") and name in expand("@clock"):
            return False
        f = SyscallFilter.merge([v for k, v in self.entries if k == "SystemCallFilter"])
        return True if f is None else (name in f.names) == f.allow_list


def installed_unit(unit_file: Path | None = None) -> ServiceUnit | None:
    """``unit_file`` if given, else edge-agent.service from systemd's unit directories with its
    drop-ins (sorted by file name, as systemd applies them); None when not installed."""
    if unit_file is not None:
        return ServiceUnit.load(unit_file)
    for d in UNIT_DIRS:
        main = d / UNIT
        if main.is_file():
            drop_ins = sorted((p for dd in UNIT_DIRS for p in (dd / f"{UNIT}.d").glob("*.conf")),
                              key=lambda p: p.name)
            return ServiceUnit.load(main, drop_ins)
    return None
