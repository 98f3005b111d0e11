"""Real disk-write accounting from the kernel: ``write_bytes`` of ``/proc/thread-self/io``.

``write_bytes`` counts the bytes this thread caused to be sent to the storage layer (charged when a
page is dirtied), so it includes SQLite's WAL frames, checkpoints into the main file and any page
rewritten after an fsync, but not filesystem-journal writes done by kernel threads. It is read per
thread, so a store can charge exactly its own commits even when other threads write too. Where the
file is missing (not Linux, or a locked-down /proc) every read returns -1 and accounting is off.
"""

from __future__ import annotations

from pathlib import Path

_THREAD_IO = Path("/proc/thread-self/io")
_PROCESS_IO = Path("/proc/self/io")


def _field(path: Path, name: str) -> int:
    try:
        text = path.read_text()
    except OSError:
        return -1
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key == name:
            return int(value)
    return -1


def thread_write_bytes() -> int:
    """Bytes the calling thread has sent to storage so far, or -1 when unavailable."""
    return _field(_THREAD_IO, "write_bytes")


def process_write_bytes() -> int:
    """Bytes the whole process has sent to storage so far, or -1 when unavailable."""
    return _field(_PROCESS_IO, "write_bytes")
