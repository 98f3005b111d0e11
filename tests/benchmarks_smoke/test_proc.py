"""benchmarks._proc: the kernel accounting the end-to-end numbers rest on."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

from benchmarks._proc import Child, cpu_seconds, memory

BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.4: pass\n" \
       "print('done', flush=True)\ntime.sleep(60)\n"


@pytest.mark.timeout(30)
def test_child_cpu_is_read_from_the_zombie_after_exit(tmp_path: Path) -> None:
    child = Child([sys.executable, "-c", BURN], tmp_path / "child.log")
    try:
        while "done" not in child.tail():
            assert child.alive(), child.tail()
        running = cpu_seconds(child.pid)
        assert running >= 0.35
    finally:
        final = child.stop(signal.SIGTERM, 10.0)
    assert not child.alive()
    assert final is not None and final >= running
    assert final < running + 0.5  # the sleep costs nothing; our own CPU is not counted


def test_memory_reports_resident_and_peak_of_a_process() -> None:
    before = memory(os.getpid())
    block = bytearray(64 * 1024 * 1024)
    block[:: 4096] = b"x" * len(block[:: 4096])  # touch every page
    after = memory(os.getpid())
    assert after.rss_mib - before.rss_mib > 50
    assert after.hwm_mib >= after.rss_mib
    del block
