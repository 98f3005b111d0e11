"""Throughput and size of batch signing and verification.

    python -m tests.trust.bench_sign

Readings shapes: ``poller`` (4 points per Modbus request share one clock pair, values like 231.4,
20 devices), ``synthetic`` (simulators.synthetic), ``worst`` (every reading its own clock
reads, all doubles).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from edge_agent.readings import Reading
from edge_agent.trust.batch import BatchSigner, ChainHead, SignedBatch
from edge_agent.trust.verify import ChainVerifier
from simulators.synthetic import synthetic_readings
from tests.trust.helpers import fixed_key, keyring

WALL0 = 1_763_000_000_000_000_000
_POINTS = (("voltage_l1", "V"), ("current_l1", "A"), ("power_w", "W"), ("energy_wh", "Wh"))


def poller(n: int, base: int, rng: random.Random) -> list[Reading]:
    out: list[Reading] = []
    mono = wall = 0
    for i in range(n):
        if i % 4 == 0:
            mono = base + i * 2_500_000
            wall = WALL0 + mono + rng.randint(0, 3000)
        point, unit = _POINTS[i % 4]
        value: float | int = round(rng.uniform(0, 500), 1) if i % 4 != 3 else rng.randint(0, 10**6)
        out.append(Reading(f"meter-{(i // 4) % 20:02d}", point, value, unit, wall, mono))
    return out


def worst(n: int, base: int, rng: random.Random) -> list[Reading]:
    out: list[Reading] = []
    for i in range(n):
        mono = base + i * 1_234_567
        point, unit = _POINTS[i % 4]
        wall = WALL0 + mono + rng.randint(0, 2000)
        out.append(
            Reading(f"meter-{i % 20}", point, round(rng.uniform(0, 500), 1), unit, wall, mono)
        )
    return out


def synthetic(n: int, base: int, rng: random.Random) -> list[Reading]:
    return list(synthetic_readings(n, start=base))


SHAPES: dict[str, Callable[[int, int, random.Random], list[Reading]]] = {
    "poller": poller,
    "synthetic": synthetic,
    "worst": worst,
}


def sign_rate(batches: list[list[Reading]]) -> tuple[float, list[SignedBatch]]:
    """Readings per second through BatchSigner.sign_readings (one core), and the batches."""
    signer = BatchSigner(fixed_key(0), "gw-bench", "boot")
    head = ChainHead.genesis()
    signed: list[SignedBatch] = []
    t = time.perf_counter()
    for readings in batches:
        b = signer.sign_readings(head, readings, created_ns=WALL0, clock_synced=True)
        head = BatchSigner.next_head(b)
        signed.append(b)
    elapsed = time.perf_counter() - t
    return sum(len(r) for r in batches) / elapsed, signed


def main() -> None:
    rng = random.Random(1)
    for name, shape in SHAPES.items():
        for per in (50, 200, 1000):
            batches = [shape(per, 10**12 + k * 10**9, rng) for k in range(40_000 // per)]
            rate, signed = sign_rate(batches)
            n = per * len(batches)
            verifier = ChainVerifier(keyring(fixed_key(0)))
            t = time.perf_counter()
            for b in signed:
                verifier.feed(b.cose)
            ok = verifier.summary().ok
            vrate = n / (time.perf_counter() - t)
            size = sum(len(b.cose) for b in signed) / n
            print(
                f"shape={name} per_batch={per} sign_readings_per_s={rate:.0f} "
                f"us_per_reading={1e6 / rate:.2f} verify_readings_per_s={vrate:.0f} "
                f"bytes_per_reading={size:.1f} ok={ok}"
            )


if __name__ == "__main__":
    main()
