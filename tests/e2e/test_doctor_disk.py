"""Doctor next to the real daemon on a disk smaller than the outbox's cap (a 3 MiB tmpfs, cap
64 MiB) while the broker withholds its PUBACKs (the outbox only grows): the outbox runs at the
disk's size, dropping its oldest batches with signed gap notices, its reserve held, healthy —
normal operation on a small disk, which doctor reports as a WARN with the figures and the readings
dropped, not as "the disk is full". Once someone takes the last byte, a commit finds the disk
full and the outbox gives its reserve up to keep committing: doctor FAILs, saying the reserve is
released and how many readings were dropped. When commits really fail it FAILs too."""

from __future__ import annotations

import json
import os
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support_disk import fill, small_fs

from .conftest import Gateway, chattier, run_gateway
from .test_disk_full import MIB, outbox, status, wait


@pytest.fixture
def gw_small_disk_reserved(tmp_path: Path) -> Iterator[tuple[Gateway, Path]]:
    with small_fs(tmp_path / "fs", 3 * MIB) as fs:

        def edit(text: str) -> str:  # a cap larger than the disk: the disk is the budget
            text = chattier(text, tmp_path / "profiles", 0.5)
            return text + (f'\n[outbox]\npath = "{fs}/outbox.sqlite"\ncap = "64MiB"\n'
                           'reserve = "256KiB"\n')

        for gw in run_gateway(tmp_path, edit=edit, proxied=True):
            yield gw, fs


def _doctor(gw: Gateway, tmp: Path) -> dict[str, dict[str, Any]]:
    unit = tmp / "u.service"
    unit.write_text("[Service]\nUser=root\n")
    out = gw.cli("doctor", "--config", str(gw.config), "--unit", str(unit), "--offline",
                 "--json", timeout=60)
    return {c["name"]: c for c in json.loads(out.stdout)}


@pytest.mark.timeout(240)
def test_doctor_on_a_disk_smaller_than_the_cap(
        gw_small_disk_reserved: tuple[Gateway, Path], tmp_path: Path) -> None:
    gw, fs = gw_small_disk_reserved
    assert gw.proxy is not None
    assert wait(lambda: int(outbox(gw)["head_seq"]) >= 5, 30)
    gw.proxy.swallow_replies = True  # the broker takes nothing more: the outbox only grows
    # a disk of 3 MiB under a cap of 64 MiB, the reserve held: normal operation, said
    checks = _doctor(gw, tmp_path)
    disk = checks["disk"]
    assert disk["status"] == "WARN" and "reserve 0.2 MiB held" in disk["detail"], disk
    assert "less than its cap of 64 MiB" in disk["detail"], disk
    assert "readings dropped" not in disk["detail"], disk
    fill(fs / "logs", leave=96 * 1024)  # others take the rest: the outbox runs at what is left
    assert wait(lambda: int(outbox(gw)["gaps"]) >= 1, 150), outbox(gw)
    box = outbox(gw)
    assert box["commit_error"] is None and status(gw)["healthy"], box
    checks = _doctor(gw, tmp_path)
    disk = checks["disk"]
    # dropping to stay within the disk; whether a commit found it full on the way (the reserve
    # given up) depends on the moment: doctor says which, with the readings dropped
    held = outbox(gw)["reserve_held"]
    assert disk["status"] == ("WARN" if held else "FAIL"), (disk, box)
    assert ("reserve 0.2 MiB held" if held else "the reserve is released") in disk["detail"]
    assert re.search(r"; [1-9]\d* readings dropped so far", disk["detail"]), disk
    assert checks["outbox"]["status"] == ("PASS" if held else "FAIL"), checks["outbox"]
    # the last byte taken: a commit finds the disk full, the reserve is given up to commit on
    fill(fs / "more-logs")
    assert wait(lambda: outbox(gw)["reserve_held"] is False, 60), outbox(gw)
    box = outbox(gw)
    checks = _doctor(gw, tmp_path)
    disk = checks["disk"]
    assert disk["status"] == "FAIL", (disk, box)
    assert "the reserve is released" in disk["detail"] and "the disk is full" in disk["detail"]
    dropped = int(re.search(r"; (\d+) readings dropped so far", disk["detail"])[1])  # type: ignore[index]
    assert dropped >= int(box["readings_dropped"]) > 0, (disk, box)
    assert checks["outbox"]["status"] == "FAIL", checks["outbox"]
    # commits really failing: the WAL checkpointed, the reserve gone, not one byte free
    side = sqlite3.connect(fs / "outbox.sqlite")
    side.execute("PRAGMA busy_timeout=10000")
    side.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    side.close()
    os.truncate(fs / "outbox.sqlite.reserve", 0)
    fill(fs / "even-more-logs")
    assert wait(lambda: outbox(gw)["commit_error"] is not None, 60), outbox(gw)
    checks = _doctor(gw, tmp_path)
    assert checks["disk"]["status"] == "FAIL", checks["disk"]
    assert "commits are failing" in checks["disk"]["detail"], checks["disk"]
    assert checks["outbox"]["status"] == "FAIL", checks["outbox"]
