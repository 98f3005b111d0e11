"""Store-and-forward benchmarks, real parts: Batcher → Outbox (SQLite WAL, fsync) → MQTT → broker.

    .venv/bin/python -m benchmarks.pipeline            all three, default sizes
    .venv/bin/python -m benchmarks.pipeline ceiling    --readings 1000000
    .venv/bin/python -m benchmarks.pipeline drain      --readings 1000000 --live 2000
    .venv/bin/python -m benchmarks.pipeline bytes      --readings 200000

ceiling: synthetic readings are batched (batch.max_readings=200), signed (Ed25519, COSE_Sign1),
    committed with fsync, published QoS 1, PUBACKed and deleted; readings/s of wall time and per
    CPU-second of this process (all its threads; mosquitto's CPU is shown apart). The process is
    pinned to one core. Reading objects come from a pre-built pool (the poll loop makes them).
drain: an outage leaves N readings in the outbox; then the uplink connects while live readings
    keep arriving at ``--live``/s; time until the backlog is PUBACKed and deleted.
bytes: kernel ``write_bytes`` charged to the outbox's own transactions (appends, acks,
    checkpoints; ``/proc/thread-self/io``) per reading, against the reading's CBOR size inside the
    signed batch and as a standalone CBOR map; RSS.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cbor2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from benchmarks._proc import Mosquitto
from edge_agent.config.model import BatchConfig, UplinkConfig
from edge_agent.outbox.records import Stats
from edge_agent.outbox.store import Outbox
from edge_agent.outbox.writer import SigningWriter, make_gap_signer
from edge_agent.pipeline.batcher import Batcher
from edge_agent.readings import Reading
from edge_agent.trust.batch import BatchSigner, ChainHead
from edge_agent.uplink.mqtt import MqttUplink
from simulators.synthetic import synthetic_readings

POOL = list(synthetic_readings(20_000))
GATEWAY = "gw-bench"


@dataclass
class Rig:
    dir: Path
    broker: Mosquitto
    outbox: Outbox
    signer: BatchSigner
    batcher: Batcher
    uplink: MqttUplink


@contextlib.contextmanager
def rig(max_readings: int = 200, inflight: int = 32, start_uplink: bool = True) -> Iterator[Rig]:
    with tempfile.TemporaryDirectory(prefix="edge-bench-") as tmp:
        d = Path(tmp)
        broker = Mosquitto(d / "broker")
        signer = BatchSigner(Ed25519PrivateKey.generate(), GATEWAY, "bench-boot")
        box = Outbox(d / "outbox.db", cap_bytes=4 << 30, gap_signer=make_gap_signer(signer))
        batcher = Batcher(
            BatchConfig(max_readings=max_readings, max_ms=1000), SigningWriter(signer, box)
        )
        cfg = UplinkConfig(host="127.0.0.1", port=broker.port, inflight=inflight)
        uplink = MqttUplink(cfg, GATEWAY, box, boot_id="bench-boot")
        if start_uplink:
            uplink.start()
        try:
            yield Rig(d, broker, box, signer, batcher, uplink)
        finally:
            batcher.close()
            uplink.stop()
            box.close()
            broker.stop()


def feed(b: Batcher, n: int, *, ahead: int = 50_000) -> None:
    """Add ``n`` readings from the pool, never more than ``ahead`` uncommitted."""
    added = 0
    pool_n = len(POOL)
    while added < n:
        while added - b.committed_readings > ahead:
            time.sleep(0.0005)
        k = min(2_000, n - added)
        start = added % pool_n
        chunk = (
            POOL[start : start + k]
            if start + k <= pool_n
            else POOL[start:] + POOL[: k - (pool_n - start)]
        )
        b.add_many(chunk)
        added += k


def cpu_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb() -> tuple[float, float]:
    cur = 0.0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            cur = int(line.split()[1]) / 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return cur, peak


def wait_empty(box: Outbox, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while box.stats().depth and time.monotonic() < deadline:
        time.sleep(0.002)
    if box.stats().depth:
        raise RuntimeError(f"outbox not drained: {box.stats()}")


def table(title: str, rows: list[tuple[str, str]]) -> None:
    w = max(len(k) for k, _ in rows)
    print(f"\n{title}\n{'-' * len(title)}")
    for k, v in rows:
        print(f"  {k:<{w}}  {v}")


def bench_ceiling(n: int) -> Stats:
    with rig() as r:
        mpid = r.broker.child.pid
        m0, c0, t0 = cpu_of(mpid), time.process_time(), time.perf_counter()
        feed(r.batcher, n)
        r.batcher.flush()
        wait_empty(r.outbox, 120)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        st = r.outbox.stats()
        table(
            f"pipeline ceiling: {n:,} readings, batch 200, inflight 32, 1 core",
            [
                ("wall s", f"{wall:.2f}"),
                ("process CPU s (all threads)", f"{cpu:.2f}"),
                ("readings/s (wall)", f"{n / wall:,.0f}"),
                ("readings per CPU-second", f"{n / cpu:,.0f}   (target >= 100,000)"),
                ("batches (signed, fsynced, PUBACKed)", f"{r.uplink.stats.acked:,}"),
                ("mosquitto CPU s", f"{cpu_of(mpid) - m0:.2f}"),
            ],
        )
        return st


def bench_drain(n: int, live_rate: int) -> None:
    with rig(start_uplink=False) as r:
        t0 = time.perf_counter()
        feed(r.batcher, n)
        r.batcher.flush()
        fill = time.perf_counter() - t0
        backlog = r.outbox.stats()
        top = backlog.head_seq
        stop = False
        live_added = 0

        def live() -> None:
            nonlocal live_added
            tick = 0.01
            while not stop:
                k = max(1, int(live_rate * tick))
                r.batcher.add_many(POOL[:k])
                live_added += k
                time.sleep(tick)

        t = threading.Thread(target=live)
        t.start()
        c0, t0 = time.process_time(), time.perf_counter()
        r.uplink.start()
        try:
            while True:
                pend = r.outbox.pending(0, 1)
                if not pend or pend[0].seq > top:
                    break
                time.sleep(0.005)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        finally:
            stop = True
            t.join()
        r.batcher.flush()
        wait_empty(r.outbox, 60)
        table(
            f"backlog drain: {n:,} readings queued during an outage, live {live_rate:,}/s",
            [
                ("fill (outage) s", f"{fill:.2f}  ({n / fill:,.0f} readings/s committed)"),
                ("backlog batches / bytes", f"{backlog.depth:,} / {backlog.bytes:,}"),
                ("drain s", f"{wall:.2f}"),
                ("drain readings/s", f"{n / wall:,.0f}"),
                ("drain readings per CPU-second", f"{n / cpu:,.0f}"),
                ("live readings during drain", f"{live_added:,} (all delivered after)"),
            ],
        )


def _bytes_run(n: int, max_readings: int, trickle: bool) -> tuple[Stats, float]:
    """Returns the outbox stats and the COSE bytes per reading of one full batch."""
    with rig(max_readings=max_readings) as r:
        if trickle:  # one batch per transaction, as a lightly loaded gateway commits
            for i in range(n // max_readings):
                r.batcher.add_many(POOL[i % 50 : i % 50 + max_readings])
                r.batcher.flush()
        else:
            feed(r.batcher, n)
            r.batcher.flush()
        wait_empty(r.outbox, 120)
        sample = POOL[:max_readings]
        signed = r.signer.sign_readings(
            ChainHead.genesis(), sample, created_ns=1, clock_synced=True
        )
        return r.outbox.stats(), len(signed.cose) / len(sample)


def bench_bytes(n: int, max_readings: int) -> None:
    sample = POOL[:max_readings]
    standalone = sum(len(_standalone(x)) for x in sample) / len(sample)
    rows: list[tuple[str, str]] = [
        ("reading as standalone CBOR map", f"{standalone:.1f} B"),
    ]
    for name, trickle, count in (("saturated", False, n), ("trickle", True, n // 10)):
        st, in_batch = _bytes_run(count, max_readings, trickle)
        per = st.written_per_reading
        rows += [
            (f"{name}: readings / batches / append txns / ack txns",
             f"{count:,} / {count // max_readings:,} / {st.append_commits:,} / {st.ack_commits:,}"),
            (f"{name}: written (write_bytes of store txns)", f"{st.bytes_written:,} B"),
            (f"{name}: written per reading", f"{per:.1f} B"),
            (f"{name}: vs reading in signed batch ({in_batch:.1f} B)", f"{per / in_batch:.2f}x"),
            (f"{name}: vs standalone CBOR reading", f"{per / standalone:.2f}x"),
        ]  # fmt: skip
    cur, peak = rss_mb()
    rows.append(("RSS now / peak", f"{cur:.0f} MB / {peak:.0f} MB"))
    table(f"disk bytes per reading, batch {max_readings} (target <= 3x)", rows)


def _standalone(r: Reading) -> bytes:
    return cbor2.dumps(
        {
            "device": r.device, "point": r.point, "value": r.value, "unit": r.unit,
            "ts_ns": r.ts_ns, "mono_ns": r.mono_ns, "quality": str(r.quality),
        }
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.pipeline")
    ap.add_argument("which", nargs="?", default="all", choices=["all", "ceiling", "drain", "bytes"])
    ap.add_argument("--readings", type=int, default=0)
    ap.add_argument("--live", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument("--cores", default="0", help="CPU ids to pin to, comma separated")
    args = ap.parse_args(argv)
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setaffinity(0, {int(c) for c in args.cores.split(",")})
    if args.which in ("all", "ceiling"):
        bench_ceiling(args.readings or 1_000_000)
    if args.which in ("all", "drain"):
        bench_drain(args.readings or 1_000_000, args.live)
    if args.which in ("all", "bytes"):
        bench_bytes(args.readings or 200_000, args.batch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
