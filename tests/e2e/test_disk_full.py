"""The real daemon with its outbox on a real small filesystem (a tmpfs of 3 MiB) that fills up
while part of the outbox is in flight (published, PUBACK withheld by a proxy): the agent keeps
committing (it drops old batches with signed gap notices), the watchdog keeps coming, `status`
shows the footprint and no commit error, and after the disk frees and the broker answers again
every batch either reached the consumer or is named in a gap notice — never both. That is what
`edge-agent verify` checks on the saved stream (contradicted = 0, unexplained = 0).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_agent.trust.batch import decode_payload
from edge_agent.trust.cose import verify1
from edge_agent.trust.keys import kid_of, public_pem
from tests.support_broker import Subscriber
from tests.support_disk import fill, small_fs

from .conftest import GW, Gateway, chattier, run_gateway

MIB = 1 << 20


@pytest.fixture
def gw_small_disk(tmp_path: Path) -> Iterator[tuple[Gateway, Path]]:
    with small_fs(tmp_path / "fs", 3 * MIB) as fs:

        def edit(text: str) -> str:  # a cap larger than the disk: the disk is the budget
            # every point every 0.5 s: ~60 readings/s from the small street, a disk fills in seconds
            text = chattier(text, tmp_path / "profiles", 0.5)
            return text + f'\n[outbox]\npath = "{fs}/outbox.sqlite"\ncap = "64MiB"\n'

        for gw in run_gateway(tmp_path, edit=edit, proxied=True):
            yield gw, fs


def status(gw: Gateway) -> dict[str, Any]:
    out = gw.cli("status", "--json")
    assert out.returncode == 0, out.stderr
    doc: dict[str, Any] = json.loads(out.stdout)
    return doc


def outbox(gw: Gateway) -> dict[str, Any]:
    box: dict[str, Any] = status(gw)["outbox"]
    return box


def watchdog_pings(gw: Gateway, seconds: float) -> int:
    """WATCHDOG=1 notifications sent during the next ``seconds`` (older ones queued are dropped)."""
    gw.notify.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        while True:
            gw.notify.recv(4096)
    gw.notify.setblocking(True)
    gw.notes.clear()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        gw.wait_notify("\0never\0", timeout=deadline - time.monotonic())
    return sum(n.count("WATCHDOG=1") for n in gw.notes)


def wait(pred: object, timeout: float, step: float = 0.5) -> bool:
    assert callable(pred)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return bool(pred())


@pytest.mark.timeout(300)
def test_full_disk_with_batches_in_flight_drops_only_what_the_broker_never_saw(
    gw_small_disk: tuple[Gateway, Path], tmp_path: Path
) -> None:
    gw, fs = gw_small_disk
    assert gw.proxy is not None
    keys = {kid_of(gw.gateway_key.public_key()): gw.gateway_key.public_key()}
    sub = Subscriber(gw.broker.port, f"edge/{GW}/data")  # the consumer, straight at the broker
    try:
        assert sub.wait_for(lambda: len(sub.payloads()) >= 5, 30), gw.log_text()[-2000:]
        # PUBACKs stop: what is published now stays in flight (the consumer gets it anyway)
        gw.proxy.swallow_replies = True
        time.sleep(3.0)
        in_flight = {decode_payload(verify1(p, keys)[1]).seq for p in sub.payloads()}
        up = status(gw)["uplink"]
        assert isinstance(up, dict) and up["published"] > up["acked"]  # really in flight
        # someone else fills the disk, leaving the outbox 96 KiB to grow into, then nothing
        fill(fs / "logs", leave=96 * 1024)
        assert wait(lambda: int(outbox(gw)["gaps"]) >= 2, 150), outbox(gw)
        fill(fs / "more-logs")
        pings = watchdog_pings(gw, 6.0)
        box = outbox(gw)
        assert pings >= 4, gw.log_text()[-3000:]  # healthy all along: the watchdog keeps coming
        assert box["commit_error"] is None and box["commit_failing_s"] is None, box
        assert int(box["footprint_bytes"]) <= 3 * MIB and int(box["budget_bytes"]) < 3 * MIB
        assert box["disk_free_bytes"] is not None and int(box["held_through"]) >= max(in_flight)
        # the disk frees, the broker answers again: everything left drains
        (fs / "logs").unlink()
        (fs / "more-logs").unlink()
        gw.proxy.swallow_replies = False
        gw.proxy.cut()
        head = int(outbox(gw)["head_seq"])

        def covered() -> bool:
            got = {decode_payload(verify1(p, keys)[1]) for p in sub.payloads()}
            seen = {p.seq for p in got}
            named = {s for p in got if p.gap for s in p.gap.seqs()}
            return set(range(1, head + 1)) <= seen | named

        if not wait(covered, 90):
            got = {decode_payload(verify1(p, keys)[1]) for p in sub.payloads()}
            seen = {p.seq for p in got}
            named = {s for p in got if p.gap for s in p.gap.seqs()}
            missing = sorted(set(range(1, head + 1)) - seen - named)
            raise AssertionError(f"missing {missing[:50]} of {head}: {outbox(gw)}")
        payloads = sub.payloads()
    finally:
        sub.close()
    decoded = [decode_payload(verify1(p, keys)[1]) for p in payloads]
    data = {p.seq for p in decoded if p.kind == "data"}
    named = {s for p in decoded if p.gap for s in p.gap.seqs()}
    assert named and not (named & data)  # exact: nothing named arrived, nothing arrived named
    assert not (named & in_flight)  # the batches in flight were never dropped
    assert set(range(1, head + 1)) <= data | named | {p.seq for p in decoded}
    # the same judgement by the consumer's tool, on the saved stream
    saved = tmp_path / "saved" / GW
    saved.mkdir(parents=True)
    for raw, p in zip(payloads, decoded, strict=True):
        (saved / f"{p.seq}.cose").write_bytes(raw)
    pub = tmp_path / "gw.pub.pem"
    pub.write_bytes(public_pem(gw.gateway_key))
    out = gw.cli("verify", "--key", f"{GW}={pub}", "--dir", str(saved.parent), "--json")
    rep = json.loads(out.stdout)
    assert out.returncode == 0 and rep["ok"], out.stdout[-2000:]
    assert rep["contradicted"] == 0 and rep["gaps_unexplained"] == 0 and rep["gap_notices"] >= 1


@pytest.mark.timeout(180)
def test_commits_failing_withhold_the_watchdog_and_show_in_status_until_the_disk_frees(
    gw_small_disk: tuple[Gateway, Path],
) -> None:
    gw, fs = gw_small_disk
    assert wait(lambda: int(outbox(gw)["head_seq"]) >= 5, 30)
    # no way out: the WAL checkpointed to nothing, the reserve gone, not one byte free
    side = sqlite3.connect(fs / "outbox.sqlite")
    side.execute("PRAGMA busy_timeout=10000")
    side.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    side.close()
    os.truncate(fs / "outbox.sqlite.reserve", 0)
    fill(fs / "logs")
    assert wait(lambda: (outbox(gw)["commit_failing_s"] or 0) > 12, 60), outbox(gw)
    st = status(gw)
    assert not st["healthy"] and any("commits failing" in r for r in st["unhealthy"]), st
    assert st["outbox"]["commit_error"] and "full" in st["outbox"]["commit_error"]
    assert watchdog_pings(gw, 3.0) == 0  # systemd would restart it: it says why in the journal
    assert "unhealthy reasons=commits failing" in gw.log_text()
    (fs / "logs").unlink()
    assert wait(lambda: outbox(gw)["commit_failing_s"] is None, 30), outbox(gw)
    assert status(gw)["healthy"] and watchdog_pings(gw, 3.0) >= 2
