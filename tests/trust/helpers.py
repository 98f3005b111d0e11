"""Shared builders for the trust tests: fixed keys, readings, signed chains."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge_agent.readings import Quality, Reading
from edge_agent.trust.batch import BatchSigner, ChainHead, SignedBatch
from edge_agent.trust.keys import kid_of

GATEWAY = "gw-test-01"
BOOT = "6c1f0d2e-boot"
T0 = 1_763_000_000_000_000_000  # wall ns
M0 = 5_000_000_000  # monotonic ns


def fixed_key(n: int = 0) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes((i + n) % 256 for i in range(32)))


def keyring(*keys: Ed25519PrivateKey) -> dict[bytes, Ed25519PublicKey]:
    return {kid_of(k.public_key()): k.public_key() for k in keys}


def make_readings(n: int, *, start: int = 0, devices: int = 3) -> list[Reading]:
    out: list[Reading] = []
    for i in range(start, start + n):
        mono = M0 + i * 10_000_000
        out.append(
            Reading(
                device=f"meter-{i % devices}",
                point=("voltage_l1", "energy_kwh", "door_open")[i % 3],
                value=(230.0 + (i % 7) * 0.5, 1000 + i, bool(i % 2))[i % 3],
                unit=("V", "kWh", "")[i % 3],
                ts_ns=T0 + (mono - M0) + (i % 5) * 1000,
                mono_ns=mono,
            )
        )
    return out


def build_chain(
    signer: BatchSigner, n_batches: int, per_batch: int = 4, head: ChainHead | None = None
) -> list[SignedBatch]:
    head = head or ChainHead.genesis()
    out: list[SignedBatch] = []
    for b in range(n_batches):
        batch = signer.sign_readings(
            head,
            make_readings(per_batch, start=b * per_batch),
            created_ns=T0 + b,
            clock_synced=True,
            created_mono_ns=M0 + b,
        )
        out.append(batch)
        head = BatchSigner.next_head(batch)
    return out


def odd_readings() -> list[Reading]:
    """Every value type, quality, flag and a clock step inside one batch."""
    return [
        Reading("d1", "p1", 1.5, "A", T0, M0),
        Reading("d1", "p2", None, "A", T0 + 5, M0 + 3, Quality.BAD, "timeout", False, True),
        Reading("d2", "p1", "text ü", "", T0 - 10, M0 - 10, Quality.STALE, "", True, False),
        Reading("d2", "p3", True, "", T0 + 99_000_000_000, M0 + 7, Quality.GOOD, "exc:2"),
        Reading("d2", "p3", -(2**63), "", T0, M0, alarm=True),
        Reading("d3", "p4", 2**64 - 1, "x", T0, M0 + 2**40),
        Reading("d3", "p4", float("inf"), "x", 0, 0, clock_synced=False),
        Reading("d3", "p5", 0.1, "x", T0, M0),
        Reading("d3", "p5", 200, "%", T0, M0, Quality.OUT_OF_RANGE, "above"),
        Reading("d3", "p6", None, "", T0, M0, Quality.UNREADABLE, "exc:2", True, False),
    ]
