"""Chaos under exhaustion: kill -9, broker restarts, network cuts and a full disk, mixed.

The agent-shaped process (``tests.uplink.soak``: synthetic readings → batcher → outbox → uplink)
keeps its outbox on a small real filesystem (a tmpfs of a few MiB, so the outbox's budget is the
disk, not its cap) and talks to a persistent mosquitto through ``Proxy``. At random moments one
of: SIGKILL the agent and start it again on the same outbox; restart the broker (SIGTERM, it keeps
its sessions); cut every connection; fill the disk with another file / free it again; start / end
an outage (the proxy swallows the broker's replies: what was published stays in flight, new
sessions get no CONNACK, the outbox fills). A last run
drains the outbox and exits. A persistent subscriber that saw everything the broker delivered must
then hold, for every seq 1..head, either the batch or a signed gap notice naming it — never both —
and ``edge-agent verify`` on the saved stream must say OK (no unexplained gap, nothing
contradicted, chain intact).

    python -m tests.uplink.chaos_full --cycles 60      (scripts/chaos --exhaustion)
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from edge_agent.trust.batch import BatchPayload, decode_payload
from edge_agent.trust.cose import parse1
from edge_agent.trust.keys import generate_signing_key, public_pem
from tests.support_broker import Mosquitto, Subscriber
from tests.support_disk import fill, small_fs
from tests.uplink.proxy import Proxy

ROOT = Path(__file__).resolve().parents[2]
GATEWAY = "gw-chaos-full"
MIB = 1 << 20
EVENTS = ("kill", "broker", "cut", "disk", "outage")


@dataclass
class FullChaosResult:
    cycles: int
    events: Counter[str] = field(default_factory=Counter)
    head: int = 0
    delivered: int = 0  # distinct seqs that reached the consumer
    named: int = 0  # seqs named dropped by gap notices
    missing: int = 0  # neither delivered nor named
    contradicted: int = 0  # delivered AND named
    readings_lost: int = 0  # announced by loss notices
    verify: dict[str, object] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return (not self.missing and not self.contradicted and bool(self.verify.get("ok"))
                and self.head > 0)

    def line(self) -> str:
        ev = ",".join(f"{k}={self.events[k]}" for k in EVENTS)
        return (f"cycles={self.cycles} events[{ev}] head={self.head} delivered={self.delivered} "
                f"named_dropped={self.named} missing={self.missing} "
                f"contradicted={self.contradicted} readings_lost={self.readings_lost} "
                f"verify_ok={self.verify.get('ok')}")


class _Agent:
    def __init__(self, port: int, outbox: Path, key: Path) -> None:
        self.args = ["--outbox", str(outbox), "--key", str(key), "--port", str(port),
                     "--gateway", GATEWAY, "--cap-bytes", str(64 * MIB)]
        self.proc: subprocess.Popen[str] | None = None

    def start(self, *extra: str) -> subprocess.Popen[str]:
        cmd = [sys.executable, "-m", "tests.uplink.soak", *self.args, *extra]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        return self.proc

    def start_ready(self, rng: random.Random) -> None:
        proc = self.start("--rate", str(rng.choice([3000, 10000])))
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            self.kill()
            raise RuntimeError("soak agent did not start")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self.proc = None


def run_full_chaos(workdir: Path, cycles: int, seed: int = 5) -> FullChaosResult:
    rng = random.Random(seed)
    res = FullChaosResult(cycles)
    key = workdir / "gateway.key"
    gw_key = generate_signing_key(key)
    broker = Mosquitto(workdir / "broker", persistence=True)
    broker.start()
    proxy = Proxy(broker.port)
    sub: Subscriber | None = None
    try:
        sub = Subscriber(broker.port, f"edge/{GATEWAY}/data", client_id="chaos-consumer",
                         persistent=True)
        with small_fs(workdir / "fs", 4 * MIB) as fs:
            agent = _Agent(proxy.port, fs / "outbox.db", key)
            filler = fs / "other-files"
            try:
                agent.start_ready(rng)
                for _ in range(cycles):
                    time.sleep(rng.uniform(0.3, 2.0))
                    event = rng.choice(EVENTS)
                    res.events[event] += 1
                    if event == "kill":
                        agent.kill()
                        agent.start_ready(rng)
                    elif event == "broker":
                        broker.restart()
                    elif event == "cut":
                        proxy.cut()
                    elif event == "outage":
                        proxy.swallow_replies = not proxy.swallow_replies
                        if not proxy.swallow_replies:
                            proxy.cut()  # the sessions that got no answers: start afresh
                    elif filler.exists():
                        filler.unlink()
                    else:
                        fill(filler)
                agent.kill()
                filler.unlink(missing_ok=True)
                proxy.swallow_replies = False
                final = agent.start("--count", "0", "--drain")
                out, _ = final.communicate(timeout=120)
                if final.returncode != 0 or "done head=" not in out:
                    raise RuntimeError(f"drain run failed rc={final.returncode}: {out[-500:]}")
                res.head = int(out.split("done head=")[1].split()[0])
            finally:
                agent.kill()

        def decoded() -> list[BatchPayload]:
            assert sub is not None
            return [decode_payload(parse1(p)[2]) for p in sub.payloads()]

        def account() -> tuple[set[int], set[int]]:
            got = decoded()
            named = {s for p in got if p.gap for s in p.gap.seqs()}
            return {p.seq for p in got}, named

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            seen, named = account()
            if set(range(1, res.head + 1)) <= seen | named:
                break
            time.sleep(0.2)
        payloads = sub.payloads()
    finally:
        if sub is not None:
            sub.close()
        proxy.close()
        broker.stop()
    got = [decode_payload(parse1(p)[2]) for p in payloads]
    data = {p.seq for p in got if p.kind == "data"}
    seen = {p.seq for p in got}
    named = {s for p in got if p.gap for s in p.gap.seqs()}
    res.delivered, res.named = len(seen), len(named)
    res.missing = len(set(range(1, res.head + 1)) - seen - named)
    res.contradicted = len(named & data)
    res.readings_lost = sum(p.loss.readings for p in got if p.loss)
    saved = workdir / "saved" / GATEWAY
    saved.mkdir(parents=True)
    for raw, p in zip(payloads, got, strict=True):
        (saved / f"{p.seq}.cose").write_bytes(raw)
    pub = workdir / "gateway.pub.pem"
    pub.write_bytes(public_pem(gw_key))
    cli = subprocess.run(
        [sys.executable, "-m", "edge_agent.cli.main", "verify", "--key", f"{GATEWAY}={pub}",
         "--dir", str(saved.parent), "--json"],
        capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    res.verify = json.loads(cli.stdout) if cli.stdout.strip() else {"ok": False}
    return res


def main() -> int:
    ap = argparse.ArgumentParser(prog="scripts/chaos --exhaustion")
    ap.add_argument("--cycles", type=int, default=60)
    ap.add_argument("--seed", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="edge-chaos-full-") as tmp:
        t0 = time.monotonic()
        res = run_full_chaos(Path(tmp), args.cycles, args.seed)
    print(res.line() + f" seconds={time.monotonic() - t0:.1f}")
    for p in list(res.verify.get("problems", []))[:10]:  # type: ignore[call-overload]
        print("problem:", p)
    return 0 if res.ok else 1


if __name__ == "__main__":
    sys.exit(main())
