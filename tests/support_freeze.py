"""A real filesystem that can be frozen (``fsfreeze -f``: what a snapshot does, and what a failing
disk looks like to a writer): ext4 in a loop-mounted image file. tmpfs cannot be frozen. Needs
root, a loop device, mkfs.ext4 and fsfreeze (util-linux, e2fsprogs: on every Debian); the test
skips with the reason otherwise. The filesystem is always thawed before it is unmounted, whatever
the test did, so nothing stays in uninterruptible sleep."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


class Freezable:
    def __init__(self, mnt: Path) -> None:
        self.mnt = mnt
        self.frozen = False

    def freeze(self) -> None:
        subprocess.run(["fsfreeze", "-f", str(self.mnt)], check=True, timeout=30)
        self.frozen = True

    def thaw(self) -> None:
        if self.frozen:
            subprocess.run(["fsfreeze", "-u", str(self.mnt)], check=True, timeout=30)
            self.frozen = False


@contextmanager
def freezable_fs(mnt: Path, size_mib: int = 16) -> Iterator[Freezable]:
    if os.geteuid() != 0:
        pytest.skip("mounting a loop filesystem needs root")
    for tool in ("mkfs.ext4", "fsfreeze", "losetup"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    image = mnt.with_name(mnt.name + ".img")
    with open(image, "wb") as f:
        f.truncate(size_mib << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, capture_output=True,
                   timeout=60)
    mnt.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], capture_output=True,
                       text=True, check=False, timeout=60)
    if r.returncode != 0:
        image.unlink()
        pytest.skip(f"cannot loop-mount a filesystem here: {r.stderr.strip()}")
    fs = Freezable(mnt)
    try:
        yield fs
    finally:
        fs.thaw()
        for _ in range(50):  # a process killed while frozen lets go of the mount when it exits
            if subprocess.run(["umount", str(mnt)], capture_output=True,
                              check=False).returncode == 0:
                break
            time.sleep(0.1)
        else:
            subprocess.run(["umount", "-l", str(mnt)], check=False)
        image.unlink(missing_ok=True)
