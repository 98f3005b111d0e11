"""Files and sockets other local users must reach, made right under the unit's restrictions.

``give_group``: a path (the control socket) owned by a group. Under the unit the daemon already
runs with Group=edge-agent, so a new socket has that group and nothing is changed — a chown, even
a no-op one, is a denied system call there (SystemCallFilter=~@privileged holds @chown).

``write_public``: a small file replaced atomically (temporary file + rename) and readable by every
local user — the Prometheus textfile node_exporter reads. The unit's UMask=0077 would leave it
0600; the mode is set on the open descriptor before the rename, so no reader ever sees a partial
or unreadable file.
"""

from __future__ import annotations

import contextlib
import grp
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def give_group(path: Path, group: str) -> str:
    """Make ``group`` own ``path``. Returns what happened: "kept" (it already did), "changed",
    "absent" (no such group: not installed as a service) or "denied" (logged at warning)."""
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        log.info("group_absent group=%s path=%s", group, path)
        return "absent"
    if os.stat(path).st_gid == gid:
        return "kept"
    try:
        os.chown(path, -1, gid)
    except PermissionError as exc:
        log.warning("group_change_denied group=%s path=%s err=%s", group, path, exc)
        return "denied"
    return "changed"


def write_public(path: Path, text: str, mode: int = 0o644) -> None:
    """Replace ``path`` with ``text`` atomically, with ``mode`` whatever the umask."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), mode)
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
