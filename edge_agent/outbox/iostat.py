"""Real disk-write accounting from the kernel: ``write_bytes`` of ``/proc/thread-self/io``.

``write_bytes`` counts the bytes this thread caused to be sent to the storage layer (charged when a
page is dirtied), so it includes SQLite's WAL frames, checkpoints into the main file and any page
rewritten after an fsync, but not filesystem-journal writes done by kernel threads. It is read per
thread, so a store can charge exactly its own commits even when other threads write too. Where the
file is missing (not Linux, or a locked-down /proc) every read returns -1 and accounting is off.
"""

from __future__ import annotations

import os

_THREAD_IO = "/proc/thread-self/io"
_PROCESS_IO = "/proc/self/io"


def _field(path: str, name: bytes) -> int:
    # os-level open/read/close: this runs twice per outbox commit and per ack, and pathlib's
    # read_text (an io stack, a decoder) cost more than the read itself
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return -1
    try:
        text = os.read(fd, 4096)
    except OSError:
        return -1
    finally:
        os.close(fd)
    for line in text.splitlines():
        key, _, value = line.partition(b":")
        if key == name:
            return int(value)
    return -1


def thread_write_bytes() -> int:
    """Bytes the calling thread has sent to storage so far, or -1 when unavailable."""
    return _field(_THREAD_IO, b"write_bytes")


def process_write_bytes() -> int:
    """Bytes the whole process has sent to storage so far, or -1 when unavailable."""
    return _field(_PROCESS_IO, b"write_bytes")
