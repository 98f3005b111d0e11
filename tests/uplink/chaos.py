"""kill -9 an agent-shaped process (``tests.uplink.soak``) at random moments, many times.

Each cycle starts the soak agent on the same outbox (synthetic readings → batcher → outbox →
uplink → real mosquitto), waits a random 0.1-0.7 s and SIGKILLs it. A last run drains the outbox
and exits cleanly. A subscriber that stayed connected the whole time must then hold every seq
1..head (so every committed reading), the chain must verify, and nothing may be unexplained.

    python -m tests.uplink.chaos --cycles 50      (what scripts/chaos runs)
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from edge_agent.trust.keys import generate_signing_key, load_signing_key
from tests.outbox.chains import verify_all
from tests.support_broker import Mosquitto, Subscriber
from tests.uplink.streams import first_arrivals

ROOT = Path(__file__).resolve().parents[2]
GATEWAY = "gw-chaos"


@dataclass(frozen=True)
class ChaosResult:
    cycles: int
    head: int  # last committed seq
    received: int  # data messages at the subscriber, duplicates included
    missing: int  # seqs 1..head never received
    duplicated: int  # redeliveries (same seq, same bytes)
    readings: int  # distinct readings received
    out_of_order: bool
    verify_ok: bool
    problems: tuple[str, ...]

    def line(self) -> str:
        return (
            f"cycles={self.cycles} head={self.head} received={self.received} "
            f"lost={self.missing} duplicated={self.duplicated} readings={self.readings} "
            f"out_of_order={self.out_of_order} chain_ok={self.verify_ok}"
        )


def _soak(port: int, outbox: Path, key: Path, *extra: str) -> subprocess.Popen[str]:
    cmd = [
        sys.executable, "-m", "tests.uplink.soak", "--outbox", str(outbox),
        "--key", str(key), "--port", str(port), "--gateway", GATEWAY, *extra,
    ]  # fmt: skip
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)


def run_chaos(workdir: Path, broker: Mosquitto, cycles: int, seed: int = 7) -> ChaosResult:
    rng = random.Random(seed)
    key = workdir / "gateway.key"
    generate_signing_key(key)
    outbox = workdir / "outbox.db"
    sub = Subscriber(broker.port, f"edge/{GATEWAY}/data")
    try:
        for _ in range(cycles):
            proc = _soak(broker.port, outbox, key, "--rate", str(rng.choice([5000, 20000])))
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                proc.kill()
                proc.wait(10)
                proc.stdout.close()
                raise RuntimeError("soak agent did not start")
            time.sleep(rng.uniform(0.1, 0.7))
            proc.kill()
            proc.wait(10)
            proc.stdout.close()
        final = _soak(broker.port, outbox, key, "--count", "0", "--drain")
        out, _ = final.communicate(timeout=60)
        if final.returncode != 0 or "done head=" not in out:
            raise RuntimeError(f"drain run failed rc={final.returncode}: {out[-500:]}")
        head = int(out.split("done head=")[1].split()[0])
        sub.wait_for(lambda: len(set(first_arrivals(sub.payloads()))) >= head, 15)
        payloads = sub.payloads()
    finally:
        sub.close()
    report = verify_all(load_signing_key(key), payloads)
    order = first_arrivals(payloads)
    return ChaosResult(
        cycles=cycles,
        head=head,
        received=len(payloads),
        missing=len(set(range(1, head + 1)) - set(order)),
        duplicated=report.duplicates,
        readings=report.readings,
        out_of_order=order != sorted(order),
        verify_ok=report.ok and report.batches == head,
        problems=report.problems,
    )


def main() -> int:
    ap = argparse.ArgumentParser(prog="scripts/chaos")
    ap.add_argument("--cycles", type=int, default=50)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="edge-chaos-") as tmp:
        broker = Mosquitto(Path(tmp) / "broker")
        broker.start()
        try:
            t0 = time.monotonic()
            result = run_chaos(Path(tmp), broker, args.cycles, args.seed)
        finally:
            broker.stop()
    print(result.line() + f" seconds={time.monotonic() - t0:.1f}")
    for p in result.problems[:10]:
        print("problem:", p)
    ok = result.missing == 0 and result.verify_ok and not result.out_of_order
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
