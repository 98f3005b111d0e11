"""A real filesystem that can be frozen (``fsfreeze -f``: what a snapshot does, and what a failing
disk looks like to a writer): ext4 in a loop-mounted image file. tmpfs cannot be frozen. Needs
root, a loop device, mkfs.ext4 and fsfreeze (util-linux, e2fsprogs: on every Debian); the test
skips with the reason otherwise. The filesystem is always thawed before it is unmounted, whatever
the test did, so nothing stays in uninterruptible sleep."""

from __future__ import annotations

import fcntl
import os
import shutil
import struct
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

EXT4_IOC_SHUTDOWN = 0x8004587D  # _IOR('X', 125, __u32)
EXT4_GOING_FLAGS_NOLOGFLUSH = 2


class Freezable:
    def __init__(self, mnt: Path, image: Path | None = None) -> None:
        self.mnt = mnt
        self.image = image
        self.frozen = False

    def shut_down(self) -> None:
        """The filesystem fails like a dying disk: every read and write of it returns EIO from
        now on (ext4's shutdown ioctl, what ``xfs_io -c shutdown`` does), until ``remount``."""
        fd = os.open(self.mnt, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.ioctl(fd, EXT4_IOC_SHUTDOWN, struct.pack("I", EXT4_GOING_FLAGS_NOLOGFLUSH))
        finally:
            os.close(fd)

    def remount(self) -> None:
        """Unmount and mount the image again (a failed filesystem back in service after the
        reboot); every process holding a file of it must be gone."""
        assert self.image is not None
        _umount(self.mnt)
        for _ in range(100):  # the loop device detaches after the unmount returns: a mount
            # before that would find it and get the shut-down filesystem back
            held = subprocess.run(["losetup", "-j", str(self.image)], capture_output=True,
                                  text=True, check=False).stdout.strip()  # fmt: skip
            if not held:
                break
            time.sleep(0.1)
        subprocess.run(["mount", "-o", "loop", str(self.image), str(self.mnt)], check=True,
                       capture_output=True, timeout=60)  # fmt: skip

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
    fs = Freezable(mnt, image)
    try:
        yield fs
    finally:
        fs.thaw()
        _umount(mnt, lazy=True)
        image.unlink(missing_ok=True)


def _umount(mnt: Path, *, lazy: bool = False) -> None:
    for _ in range(50):  # a process killed while frozen lets go of the mount when it exits
        if subprocess.run(["umount", str(mnt)], capture_output=True, check=False).returncode == 0:
            return
        time.sleep(0.1)
    if not lazy:
        raise AssertionError(f"{mnt}: still busy, cannot unmount")
    subprocess.run(["umount", "-l", str(mnt)], check=False)
