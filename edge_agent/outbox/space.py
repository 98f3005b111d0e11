"""What the outbox takes on disk and how much it may take: files, free space, the reserve file.

The cap counts the real footprint: the database, its WAL, the WAL index (``-shm``), a rollback
journal if one is left over, and the reserve file. Two allowances are counted even before they
are used, so that using them never needs space the budget gave away: the WAL may grow to
``wal_limit`` (SQLite checkpoints it back into the database at half of it and truncates it to it)
and the reserve keeps ``reserve`` bytes. Pages on SQLite's freelist (left by deleted batches)
are reusable space inside the database file: they count as free, not as used.

The budget is the smaller of the configured cap and what the filesystem can hold: the outbox's
files now plus the filesystem's free space. So a disk smaller than the cap, or one that other
files fill up, shrinks the budget, and the outbox drops its oldest batches (with a signed gap
notice) instead of failing its commits.

The reserve file is preallocated next to the database. When a commit fails for want of space
(ENOSPC, SQLITE_FULL) the store releases it, which leaves room for the drop, its gap notice, an
ack and a delete to commit; it is taken back as soon as the space is free again.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

MIB = 1 << 20
RESERVE_MIN, RESERVE_MAX = 64 * 1024, 4 * MIB
WAL_MIN, WAL_MAX = 64 * 1024, 8 * MIB
RESERVE_RETRY_S = 5.0  # how often a released reserve is tried again
_SUFFIXES = ("", "-wal", "-shm", "-journal")


def default_reserve(cap_bytes: int) -> int:
    """The reserve a cap gets unless configured: 1/16 of it, within 64 KiB .. 4 MiB."""
    return max(RESERVE_MIN, min(cap_bytes // 16, RESERVE_MAX))


def wal_limit(cap_bytes: int) -> int:
    """The WAL allowance: 1/8 of the cap within 64 KiB .. 8 MiB (8 MiB for the 256 MiB default)."""
    return max(WAL_MIN, min(cap_bytes // 8, WAL_MAX))


@dataclass(frozen=True, slots=True)
class Footprint:
    """One measurement of the outbox's files and of the filesystem holding them (bytes)."""

    db: int
    wal: int
    shm: int
    journal: int
    reserve: int  # the reserve file as it is now (0 when released)
    fs_free: int  # free for an unprivileged writer (statvfs f_bavail); -1 when unknown

    @property
    def files(self) -> int:
        return self.db + self.wal + self.shm + self.journal + self.reserve

    @property
    def disk_budget(self) -> int:
        """All the outbox's files could ever take on this filesystem: now plus what is free."""
        return self.files + max(0, self.fs_free) if self.fs_free >= 0 else 1 << 62


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def disk_size(directory: Path) -> int:
    """Total size of the filesystem holding ``directory`` (huge when unknown)."""
    try:
        st = os.statvfs(directory)
    except OSError:
        return 1 << 62
    return st.f_blocks * st.f_frsize


def measure(db_path: Path, reserve_path: Path) -> Footprint:
    """Stat the files and the filesystem. Raises OSError only for real I/O trouble."""
    sizes = [_size(f"{db_path}{s}") for s in _SUFFIXES]
    try:
        st = os.statvfs(db_path.parent)
        free = st.f_bavail * st.f_frsize
    except OSError:
        free = -1
    return Footprint(sizes[0], sizes[1], sizes[2], sizes[3], _size(str(reserve_path)), free)


class Reserve:
    """A preallocated file of ``size`` bytes that is given back to the filesystem when a commit
    cannot find space, and taken again once that much is free."""

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.size = size
        self.held = False
        self._next_try = 0.0
        self.releases = 0  # times it was given up since open

    def ensure(self, *, force: bool = False, free: int = -1) -> bool:
        """Hold the reserve: at once when ``force`` or when ``free`` (the filesystem's free bytes
        as just measured) has room for it, otherwise at most one try every RESERVE_RETRY_S."""
        if self.held or self.size <= 0:
            return self.held
        now = time.monotonic()
        if 0 <= free < self.size:
            return False
        if not force and free < 0 and now < self._next_try:
            return False
        self._next_try = now + RESERVE_RETRY_S
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
        except OSError as exc:
            log.warning("outbox_reserve_unavailable path=%s err=%s", self.path, exc)
            return False
        try:
            _allocate(fd, self.size)
            os.fsync(fd)
        except OSError as exc:
            try:
                os.ftruncate(fd, 0)
            except OSError:
                pass
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                log.warning("outbox_reserve_unavailable path=%s err=%s", self.path, exc)
            return False
        finally:
            os.close(fd)
        if self.releases:
            log.info("outbox_reserve_restored path=%s bytes=%d", self.path, self.size)
        self.held = True
        return True

    def release(self) -> bool:
        """Give the reserve's blocks back; True when it was held (there is new room now)."""
        had = self.held or _size(str(self.path)) > 0
        self.held = False
        self._next_try = time.monotonic() + RESERVE_RETRY_S
        if not had:
            return False
        try:
            os.truncate(self.path, 0)
        except OSError as exc:
            log.warning("outbox_reserve_release_failed path=%s err=%s", self.path, exc)
            return False
        self.releases += 1
        log.warning("outbox_reserve_released path=%s bytes=%d (disk full)", self.path, self.size)
        return True


def _allocate(fd: int, size: int) -> None:
    """Really allocate ``size`` bytes (a sparse file would reserve nothing)."""
    try:
        os.posix_fallocate(fd, 0, size)
        return
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
    block = bytes(64 * 1024)  # filesystems without fallocate: write zeros
    os.lseek(fd, 0, os.SEEK_SET)
    left = size
    while left > 0:
        left -= os.write(fd, block[: min(left, len(block))])
