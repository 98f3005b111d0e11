"""A real small filesystem for disk-full tests: a tmpfs of a few MiB mounted on a test directory.

Mounting needs root (CAP_SYS_ADMIN), which the test machines and CI (scripts/test runs as root)
have; elsewhere the tests that need it are skipped with the reason. tmpfs is a real filesystem to
the agent: writes past its size fail with ENOSPC, ``statvfs`` reports its free space,
and ``posix_fallocate`` reserves blocks.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def small_fs(path: Path, size: int) -> Iterator[Path]:
    """Mount a tmpfs of ``size`` bytes on ``path`` for the duration of the block."""
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs (needs root): {r.stderr.strip()}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True, check=False).returncode:
            subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(path: Path, leave: int = 0) -> int:
    """Write a filler file ``path`` until the filesystem is full (or only ``leave`` bytes are
    free); the file stays. Returns its size."""
    block = bytes(16 * 1024)
    written = 0
    with open(path, "wb", buffering=0) as f:
        while True:
            room = free_bytes(path.parent) - leave
            if room <= 0:
                break
            try:
                written += f.write(block[: min(len(block), room)])
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
    return written
