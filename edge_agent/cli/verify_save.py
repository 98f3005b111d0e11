"""``edge-agent verify --save DIR``: an append-only archive of every batch received.

``<gateway>/<seq>.cose`` is the FIRST copy ever received for that seq and is never replaced. A
later copy with different bytes (a conflict) is kept beside it as evidence,
``<gateway>/<seq>.conflict-<sha256 prefix>.cose``; forged or malformed messages go to
``_rejected/<sha256 prefix>.cose``. Each file is written under a temporary name (in ``.tmp/``,
emptied at start), fsynced and hard-linked into place — ``link`` fails instead of replacing — so
a crash never leaves a partial file under a final name; ``sync()`` fsyncs the directories that
got new names (call it before the messages count as recorded). ``edge-agent verify --dir DIR``
reads the archive back: first copies first, then the evidence.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")


def _write_new(tmp: Path, target: Path, data: bytes) -> bool:
    """Create ``target`` with ``data`` durably (via ``tmp``, same filesystem); False (nothing
    written) when it already exists."""
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, target)
        except FileExistsError:
            return False
        return True
    finally:
        tmp.unlink(missing_ok=True)


class SaveDir:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._touched: set[Path] = set()
        self.conflicts_kept = 0
        # temporary names live apart, so a crash leaves nothing in the archive itself; what an
        # earlier run left there is removed
        self._tmpdir = root / ".tmp"
        self._tmpdir.mkdir(parents=True, exist_ok=True)
        for stale in self._tmpdir.iterdir():
            stale.unlink(missing_ok=True)
        self._tmp = self._tmpdir / f"{os.getpid()}.tmp"

    def _dir(self, name: str) -> Path:
        d = self.root / name
        if d not in self._touched:
            d.mkdir(parents=True, exist_ok=True)
        return d

    def put(self, gateway: str, seq: int, data: bytes) -> str:
        """File a validly signed batch: "saved", "same" (that copy is there already) or
        "conflict" (another copy is first: this one kept beside it)."""
        d = self._dir(_SAFE_NAME.sub("_", gateway) or "_")
        target = d / f"{seq}.cose"
        if _write_new(self._tmp, target, data):
            self._touched.add(d)
            return "saved"
        if target.read_bytes() == data:
            return "same"
        evidence = d / f"{seq}.conflict-{hashlib.sha256(data).hexdigest()[:16]}.cose"
        if _write_new(self._tmp, evidence, data):
            self._touched.add(d)
            self.conflicts_kept += 1
        return "conflict"

    def reject(self, data: bytes) -> None:
        d = self._dir("_rejected")
        if _write_new(self._tmp, d / f"{hashlib.sha256(data).hexdigest()[:32]}.cose", data):
            self._touched.add(d)

    def sync(self) -> None:
        """fsync every directory that got a new name since the last call (and the root)."""
        if not self._touched:
            return
        for d in [*sorted(self._touched), self.root]:
            fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        self._touched.clear()


def file_order(path: Path) -> tuple[str, int, int, str]:
    """Sort key for reading a directory back: per folder, by seq, the first copy before evidence."""
    head, _, rest = path.name.partition(".")
    seq = int(head) if head.isdigit() else -1
    return (str(path.parent), seq, 0 if rest == "cose" else 1, path.name)
