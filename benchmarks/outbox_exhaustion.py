"""The outbox under exhaustion, on real small filesystems (tmpfs mounts: run as root).

    .venv/bin/python -m benchmarks.outbox_exhaustion             both
    .venv/bin/python -m benchmarks.outbox_exhaustion footprint   bytes on disk per reading at cap
    .venv/bin/python -m benchmarks.outbox_exhaustion recover     recovery once the disk frees

footprint: signed batches (synthetic street readings, N per batch) are appended, one transaction
    each, until the cap has been reached and the outbox has dropped (with gap notices) for a while;
    then the real files are measured: what the outbox holds (readings, signed bytes) against what
    it takes on disk (database + WAL + WAL index + reserve file). One row per cap and batch size,
    plus a disk smaller than the cap (the filesystem is the budget).
recover: batcher → outbox → MQTT uplink → mosquitto at 2,000 readings/s; then the disk is made full
    with no way out (WAL checkpointed to nothing, reserve released, another file takes every free
    byte): appends and acks fail, readings wait in the bounded backlog. After 10 s the other file is
    deleted; measured from that moment: the first successful commit, the acks committing again and
    the outbox back to its live depth. The figures depend on the retry backoff (batcher up to 5 s,
    uplink acks up to 2 s), so a few runs are shown.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from benchmarks._proc import Mosquitto
from edge_agent.config.model import BatchConfig, UplinkConfig
from edge_agent.outbox.store import Outbox
from edge_agent.outbox.writer import SigningWriter, make_gap_signer
from edge_agent.pipeline.batcher import Batcher
from edge_agent.retry import RetryPolicy
from edge_agent.trust.batch import BatchSigner, ChainHead
from edge_agent.uplink.mqtt import MqttUplink
from simulators.synthetic import synthetic_readings

MIB = 1 << 20
GATEWAY = "gw-bench"


@contextlib.contextmanager
def tmpfs(size: int) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="edge-bench-fs-") as tmp:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", tmp],
                           capture_output=True, text=True, check=False)
        if r.returncode:
            sys.exit(f"cannot mount a tmpfs (run as root): {r.stderr.strip()}")
        try:
            yield Path(tmp)
        finally:
            subprocess.run(["umount", "-l", tmp], check=False)


def fill(path: Path) -> None:
    block = bytes(64 * 1024)
    with open(path, "wb", buffering=0) as f:
        while True:
            try:
                f.write(block)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
    with contextlib.suppress(OSError), open(path, "ab", buffering=0) as f:
        while f.write(b"\0" * 512):  # the last partial block
            pass


def footprint_row(cap: int, disk: int, per_batch: int) -> list[str]:
    signer = BatchSigner(Ed25519PrivateKey.generate(), GATEWAY, "bench")
    pool = list(synthetic_readings(per_batch * 64))
    with tmpfs(disk) as fs:
        box = Outbox(fs / "o.db", cap_bytes=cap, gap_signer=make_gap_signer(signer))
        try:
            i = 0
            while box.stats().gaps < 8:  # well past the cap: drops are the steady state
                h = box.head
                start = (i % 64) * per_batch
                b = signer.sign_readings(ChainHead(h.seq, h.prev), pool[start:start + per_batch],
                                         created_ns=time.time_ns(), clock_synced=True)
                box.append([b])
                i += 1
            st = box.stats()
        finally:
            box.close()
    per = st.footprint_bytes / max(1, st.readings)
    return [f"{cap / MIB:g} MiB", f"{disk / MIB:g} MiB", str(per_batch), f"{st.readings:,}",
            f"{st.bytes:,}", f"{st.footprint_bytes:,}", f"{st.footprint_bytes / cap:.2f}"
            if cap <= disk else f"{st.footprint_bytes / disk:.2f} of disk",
            f"{st.bytes / max(1, st.readings):.1f}", f"{per:.1f}", str(st.gaps)]


def footprint() -> None:
    head = ["cap", "disk", "readings/batch", "readings held", "signed bytes", "bytes on disk",
            "disk / cap", "signed B/reading", "disk B/reading", "gap notices"]
    rows = [footprint_row(cap, disk, n) for cap, disk, n in (
        (1 * MIB, 4 * MIB, 50), (1 * MIB, 4 * MIB, 200), (8 * MIB, 16 * MIB, 50),
        (8 * MIB, 16 * MIB, 200), (64 * MIB, 4 * MIB, 200))]
    table(head, rows)


def recover_once(seconds_full: float) -> list[str]:
    with tmpfs(16 * MIB) as fs, tempfile.TemporaryDirectory(prefix="edge-bench-") as tmp:
        broker = Mosquitto(Path(tmp) / "broker")
        signer = BatchSigner(Ed25519PrivateKey.generate(), GATEWAY, "bench")
        box = Outbox(fs / "o.db", cap_bytes=8 * MIB, gap_signer=make_gap_signer(signer))
        writer = SigningWriter(signer, box)
        batcher = Batcher(BatchConfig(max_readings=200, max_ms=250), writer,
                          on_loss=writer.commit_loss)
        up = MqttUplink(UplinkConfig(host="127.0.0.1", port=broker.port, inflight=32), GATEWAY,
                        box, boot_id="bench", retry=RetryPolicy(initial_s=0.1, max_s=2.0))
        up.start()
        stop = threading.Event()

        def produce() -> None:
            n = 0
            t0 = time.monotonic()
            while not stop.is_set():
                batcher.add_many(synthetic_readings(100, start=n))
                n += 100
                ahead = n / 2000 - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)

        t = threading.Thread(target=produce)
        t.start()
        try:
            time.sleep(3.0)
            side = sqlite3.connect(box.path)
            side.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            side.close()
            box.reserve.release()
            fill(fs / "other")
            time.sleep(seconds_full)
            failing = batcher.failing_s or 0.0
            backlog = batcher.backlog
            t0 = time.monotonic()
            (fs / "other").unlink()
            t_commit = t_ack = t_depth = None
            while time.monotonic() - t0 < 60 and t_depth is None:
                now = time.monotonic() - t0
                if t_commit is None and batcher.failing_s is None:
                    t_commit = now
                if t_commit is not None and t_ack is None and up.stats.ack_pending == 0:
                    t_ack = now
                if t_ack is not None and box.stats().depth <= 16:
                    t_depth = now
                time.sleep(0.01)
        finally:
            stop.set()
            t.join()
            batcher.close()
            up.stop()
            box.close()
            broker.stop()

    def s(x: float | None) -> str:
        return "-" if x is None else f"{x:.2f} s"

    return [f"{seconds_full:.0f} s", f"{failing:.1f} s", f"{backlog:,}", s(t_commit), s(t_ack),
            s(t_depth), f"{batcher.readings_lost:,}"]


def recover(runs: int) -> None:
    head = ["disk full for", "commits failing", "backlog (readings)", "first commit",
            "acks committed", "outbox drained", "readings lost"]
    table(head, [recover_once(10.0) for _ in range(runs)])


def table(head: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")


def main() -> int:
    ap = argparse.ArgumentParser(prog="benchmarks.outbox_exhaustion")
    ap.add_argument("what", nargs="?", choices=("all", "footprint", "recover"), default="all")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("benchmarks.outbox_exhaustion mounts small tmpfs filesystems: run it as root")
    if args.what in ("all", "footprint"):
        footprint()
    if args.what in ("all", "recover"):
        recover(args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
