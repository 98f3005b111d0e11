"""Doctor's disk line: free space at the outbox against its reserve and cap, judged with the
running daemon's own figures when it runs (see ``check_disk``), measured in a bounded child
(``doctor_probe``: statvfs on a failing disk can hang)."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

from edge_agent.cli.doctor_checks import FAIL, FROZEN_HINT, PASS, SKIP, WARN, Check
from edge_agent.cli.doctor_probe import NoAnswer, in_child, write_probe
from edge_agent.config.model import AgentConfig


def _measure(cfg: AgentConfig, want_files: bool) -> dict[str, Any]:
    """Free space at the outbox's directory (its nearest existing parent), the outbox's files
    (None when not ours to see) and, where we may write there, whether a written block reaches
    the disk (what every commit needs; a frozen disk never answers). In a bounded child."""
    target = cfg.outbox.path.parent
    while not target.exists() and target != target.parent:
        target = target.parent
    try:
        st = os.statvfs(target)
    except OSError as exc:
        return {"target": str(target), "error": f"{exc.strerror or exc}"}
    sizes: dict[str, int] | None = None
    if want_files:
        try:
            sizes = {s: _size(Path(f"{cfg.outbox.path}{s}"))
                     for s in ("", "-wal", "-shm", "-journal", ".reserve")}
        except PermissionError:
            sizes = None
    wrote: str | None = None  # None: not ours to write; "" written; else why not
    if target == cfg.outbox.path.parent and os.access(target, os.W_OK):
        try:
            write_probe(target)
            wrote = ""
        except OSError as exc:  # no room: the free-space verdict says it
            wrote = None if exc.errno in (errno.ENOSPC, errno.EDQUOT) else f"{exc.strerror or exc}"
    return {"target": str(target), "free": st.f_bavail * st.f_frsize, "sizes": sizes,
            "wrote": wrote}


def check_disk(cfg: AgentConfig, daemon_outbox: dict[str, Any] | None) -> Check:
    """Free space against the outbox's reserve and cap (the daemon's own figures when it runs:
    footprint_bytes, disk_free_bytes, cap_bytes, reserve_bytes, reserve_held, commit_error).

    FAIL only when the outbox cannot keep committing: commits failing, or its reserve not held
    (released because a commit found the disk full, or never taken). A disk smaller than the cap,
    or one with less free than the reserve beside a held reserve, is normal operation on a small
    disk: the outbox drops its oldest batches (signed gap notices) to stay within what the disk
    allows, and says so as a WARN with the figures."""
    from edge_agent.outbox.space import default_reserve

    d = daemon_outbox or {}
    want_files = not isinstance(d.get("footprint_bytes"), int)
    where_to = cfg.outbox.path.parent
    try:
        m = in_child(lambda: _measure(cfg, want_files))
    except NoAnswer as exc:
        if exc.seconds is None:
            return Check("disk", SKIP, f"cannot measure {where_to}: {exc}")
        return Check("disk", FAIL, f"{where_to}: {exc}", FROZEN_HINT)
    target = m["target"]
    if "error" in m:
        return Check("disk", SKIP, f"cannot stat {target}: {m['error']}")
    cap = int(d.get("cap_bytes") or cfg.outbox.cap_bytes)
    reserve = int(d.get("reserve_bytes") or cfg.outbox.reserve_bytes or default_reserve(cap))
    free = int(d["disk_free_bytes"]) if isinstance(d.get("disk_free_bytes"), int) \
        and d["disk_free_bytes"] >= 0 else int(m["free"])
    sizes = m["sizes"]
    files: int | None = int(d["footprint_bytes"]) if not want_files else \
        (sum(sizes.values()) if sizes is not None else None)
    held: bool | None = d.get("reserve_held") if isinstance(d.get("reserve_held"), bool) \
        else None
    if held is None and sizes is not None:  # no daemon: the file it would hold, on the disk
        held = sizes[".reserve"] >= reserve
    mib = 2**20
    where = f"{free / mib:.1f} MiB free at {target}"
    kept = "" if files is None else f"; outbox {files / mib:.1f} MiB"
    dropped = int(d.get("readings_dropped") or 0)
    lost = f"; {dropped} readings dropped so far (signed gap notices)" if dropped else ""
    if d.get("commit_error"):
        since = d.get("commit_failing_s")
        span = "" if since is None else f" for {since:.0f} s"
        return Check("disk", FAIL, f"{where}{kept}: the outbox's commits are failing{span}: "
                     f"{d['commit_error']}{lost}", "free space now (journal, logs, core files)")
    wrote = m.get("wrote")
    if wrote:
        return Check("disk", FAIL, f"{where}: a block written in {target} did not reach the "
                     f"disk: {wrote}{lost}", "`dmesg`; `mount` (remounted read-only?)")
    if free < reserve and held is None:
        return Check("disk", WARN, f"{where}, below the outbox's reserve of {reserve / mib:.1f} "
                     "MiB; whether the outbox holds its reserve is not yours to see",
                     "`sudo edge-agent doctor` tells; free space (journal, logs, core files)")
    if free < reserve and not held:
        gone = ("released: a commit found the disk full and the outbox runs on its last "
                "reserve, dropping its oldest batches" if d else "not on the disk")
        return Check("disk", FAIL, f"{where}: the disk is full, below the outbox's reserve "
                     f"of {reserve / mib:.1f} MiB, and the reserve is {gone}{lost}",
                     f"free space now (journal, logs, core files): the outbox takes its "
                     f"reserve back once {reserve / mib:.1f} MiB are free")
    reserve_note = f"; reserve {reserve / mib:.1f} MiB held" if held else ""
    if files is not None and files + free < cap:
        return Check("disk", WARN, f"{where}{reserve_note}; the outbox ({files / mib:.1f} MiB "
                     f"now) can grow to {(files + free) / mib:.1f} MiB, less than its cap of "
                     f"{cap / mib:.0f} MiB: beyond that it drops its oldest batches (signed gap "
                     f"notices){lost}", "free space or lower [outbox] cap")
    if free < reserve:
        return Check("disk", WARN, f"{where}{kept}{reserve_note}: less free than the reserve; "
                     f"the outbox keeps committing{lost}",
                     "free space (journal, logs, core files)")
    return Check("disk", PASS, f"{where}{kept}{reserve_note}; cap {cap / mib:.0f} MiB")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
