"""Who the service runs as, and doing things as that identity (for `edge-agent doctor`).

The identity comes from the unit: ``systemctl show`` when systemd runs, else the unit file and its
drop-ins (User=, Group=, SupplementaryGroups=; systemd's rules: the last User=/Group= wins, an
empty SupplementaryGroups= resets the list, the user's own groups come in through initgroups).
As root, ``run_as`` forks a child that drops to that identity (setgroups, setgid, setuid) and
runs the checks there, so they see exactly the accesses the daemon will have (short of the
sandbox: DeviceAllow= and the read-only mounts are systemd's). Without root, ``may_access``
answers from mode bits where the caller can stat the path (ACLs are not evaluated).
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_agent.platform.unit_file import UNIT, ServiceUnit, installed_unit

DEFAULT_USER, DEFAULT_SUPPLEMENTARY = "edge-agent", ("dialout",)
NO_UNIT = "the shipped unit's defaults (no installed unit found)"


@dataclass(frozen=True)
class UnitIdentity:
    """What the unit says (names or numbers), and where that came from."""

    user: str
    group: str | None
    supplementary: tuple[str, ...]
    source: str


@dataclass(frozen=True)
class Identity:
    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]  # every group the process will hold, the primary one included
    source: str
    unknown_groups: tuple[str, ...] = field(default=())

    def describe(self) -> str:
        names = ",".join(_group_name(g) for g in self.groups)
        return f"{self.name} (uid {self.uid}, groups {names or '-'})"


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def identity_of(unit: ServiceUnit) -> UnitIdentity:
    """User/Group/SupplementaryGroups of a unit and its drop-ins (systemd's rules: the last
    User=/Group= wins, an empty SupplementaryGroups= resets the list)."""
    return UnitIdentity(unit.last("User") or "root", unit.last("Group") or None,
                        tuple(unit.every("SupplementaryGroups")), unit.source)


def parse_unit(texts: list[str], source: str) -> UnitIdentity:
    """The identity from unit file texts (the unit, then its drop-ins); no text: the shipped
    unit's defaults."""
    if not texts:
        return UnitIdentity("root", None, DEFAULT_SUPPLEMENTARY, source)
    return identity_of(ServiceUnit.from_texts([(source, t) for t in texts], source))


def unit_identity(unit_file: Path | None = None) -> UnitIdentity:
    if unit_file is not None:
        return identity_of(ServiceUnit.load(unit_file))
    systemctl = shutil.which("systemctl")
    if systemctl and Path("/run/systemd/system").is_dir():
        r = subprocess.run([systemctl, "show", "-p", "User", "-p", "Group", "-p",
                            "SupplementaryGroups", "-p", "LoadState", UNIT],
                           capture_output=True, text=True, timeout=10, check=False)
        props = dict(ln.split("=", 1) for ln in r.stdout.splitlines() if "=" in ln)
        if r.returncode == 0 and props.get("LoadState") == "loaded":
            return UnitIdentity(props.get("User") or "root", props.get("Group") or None,
                                tuple(props.get("SupplementaryGroups", "").split()),
                                f"systemctl show {UNIT}")
    unit = installed_unit()
    if unit is not None:
        return identity_of(unit)
    return UnitIdentity(DEFAULT_USER, None, DEFAULT_SUPPLEMENTARY, NO_UNIT)


def myself(source: str) -> Identity:
    """The identity of this process."""
    uid, gid = os.geteuid(), os.getegid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = str(uid)
    return Identity(name, uid, gid, tuple(dict.fromkeys([gid, *os.getgroups()])), source)


def _uid(user: str) -> tuple[str, int, int] | None:
    """(name, uid, primary gid) of a user name or number; None if the name is unknown."""
    try:
        pw = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
        return pw.pw_name, pw.pw_uid, pw.pw_gid
    except KeyError:
        return (user, int(user), int(user)) if user.isdigit() else None


def _gid(group: str) -> int | None:
    try:
        return int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
    except KeyError:
        return None


def resolve(unit: UnitIdentity) -> Identity | str:
    """The numeric identity, or why there is none (a user that does not exist)."""
    found = _uid(unit.user)
    if found is None:
        return (f"the service user {unit.user!r} ({unit.source}) does not exist on this machine")
    name, uid, gid = found
    if unit.group is not None:
        g = _gid(unit.group)
        if g is None:
            return f"the service group {unit.group!r} ({unit.source}) does not exist"
        gid = g
    try:
        own = os.getgrouplist(name, gid) if not name.isdigit() else [gid]
    except OSError:
        own = [gid]
    groups, unknown = list(dict.fromkeys([gid, *own])), []
    for s in unit.supplementary:
        g = _gid(s)
        if g is None:
            unknown.append(s)
        elif g not in groups:
            groups.append(g)
    return Identity(name, uid, gid, tuple(groups), unit.source, tuple(unknown))


def run_as(ident: Identity, fn: Callable[[], list[dict[str, Any]]],
           timeout_s: float = 60.0) -> list[dict[str, Any]] | str:
    """``fn()`` in a forked child that runs as ``ident``: its JSON-able result, or why it could
    not run (a string; also when it said nothing within ``timeout_s``). Needs root."""
    from edge_agent.cli.doctor_probe import NoAnswer, in_child

    try:
        out = in_child(fn, timeout_s=timeout_s, ident=ident)
    except NoAnswer as exc:
        if exc.seconds is not None:
            return f"checking as {ident.name}: {exc}"
        return f"checking as {ident.name} failed: {exc}"
    if not isinstance(out, list):
        return f"checking as {ident.name}: the child process said nothing"
    result: list[dict[str, Any]] = out
    return result


def may_access(path: Path, ident: Identity, want: int) -> bool | None:
    """Whether ``ident`` may ``want`` (os.R_OK | os.W_OK | os.X_OK) ``path`` by mode bits,
    including search permission on every parent; None when the caller cannot stat something."""
    try:
        chain = [path, *path.parents]
        for i, p in enumerate(chain):
            st = os.stat(p)
            need = want if i == 0 else os.X_OK
            if ident.uid == 0:
                continue
            if st.st_uid == ident.uid:
                bits = (st.st_mode >> 6) & 7
            elif st.st_gid in ident.groups:
                bits = (st.st_mode >> 3) & 7
            else:
                bits = st.st_mode & 7
            if bits & need != need:
                return False
    except PermissionError:
        return None
    except FileNotFoundError:
        return False
    return True
