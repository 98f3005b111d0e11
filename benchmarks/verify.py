"""Consumer-side verification benchmark: batches per second through ``ChainVerifier`` and what its
state costs, as history grows.

A fleet of gateways' chains (pre-signed, so signing is not measured) is fed round-robin, with a
hole every ``--gap-every`` seqs and a gap notice per hole (so claims and missing ranges grow too),
into a temporary state and into a file state committed every 256 batches (the archiver's group:
``synchronous=FULL``, one fsync per commit). The rate is reported per slice of the stream: it must
stay flat as history grows (every lookup is an index probe). Times are this process's CPU time
(the machine is shared; fsync waits are not CPU and not counted). The last column is what the chain
logic and its state add per batch over the signature check and payload decoding alone (measured
on the same batches); peak RSS and the state file size are printed at the end.

    .venv/bin/python -m benchmarks.verify [--gateways 20] [--per-gateway 2500] [--gap-every 50]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.trust.batch import BatchSigner, ChainHead, SignedBatch, decode_payload
from edge_agent.trust.cose import verify1
from edge_agent.trust.keys import kid_of
from edge_agent.trust.verify import ChainVerifier
from edge_agent.trust.verify_state import VerifyState
from simulators.synthetic import synthetic_readings

GROUP = 256


def fleet(gateways: int, per_gateway: int, gap_every: int) -> tuple[list[bytes], Ed25519PrivateKey]:
    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    readings = list(synthetic_readings(20))
    chains: list[list[bytes]] = []
    for g in range(gateways):
        signer = BatchSigner(key, f"gw-{g:04d}", "boot")
        head, out = ChainHead.genesis(), list[bytes]()
        for seq in range(1, per_gateway + 1):
            if gap_every and seq % gap_every == 0:  # this one is dropped, a notice follows
                b: SignedBatch = signer.sign_gap(
                    head, first_seq=head.seq, last_seq=head.seq, readings=20, t_first_ns=0,
                    t_last_ns=0, reason="outbox_full", created_ns=seq, clock_synced=True,
                )  # fmt: skip
                out.pop()
            else:
                b = signer.sign_readings(head, readings, created_ns=seq, clock_synced=True)
            out.append(b.cose)
            head = BatchSigner.next_head(b)
        chains.append(out)
    stream = [c[i] for i in range(max(map(len, chains))) for c in chains if i < len(c)]
    return stream, key


def baseline(stream: list[bytes], key: Ed25519PrivateKey) -> float:
    """Seconds per batch for the signature check and payload decoding alone."""
    keys = {kid_of(key.public_key()): key.public_key()}
    t0 = time.process_time()
    for m in stream:
        decode_payload(verify1(m, keys)[1])
    return (time.process_time() - t0) / len(stream)


def run(stream: list[bytes], key: Ed25519PrivateKey, path: Path | None, slices: int) -> list[str]:
    pub = key.public_key()
    base = baseline(stream[: len(stream) // slices], key)
    state = VerifyState(path)
    v = ChainVerifier({kid_of(pub): pub}, state=state)
    rows, n = [], len(stream) // slices
    for s in range(slices):
        t0 = time.process_time()
        part = stream[s * n : (s + 1) * n]
        for i, m in enumerate(part, 1):
            v.feed(m)
            if i % GROUP == 0:
                v.commit()
        v.commit()
        dt = time.process_time() - t0
        rows.append(
            f"{(s + 1) * n:>9} {len(part) / dt:>12,.0f} {(dt / len(part) - base) * 1e6:>10.0f}"
        )
    t0 = time.process_time()
    rep = v.summary()
    rows.append(f"report {time.process_time() - t0:.3f} s: batches={rep.batches} "
                f"gaps_explained={rep.gaps_explained} ok={rep.ok}")  # fmt: skip
    state.close()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gateways", type=int, default=20)
    ap.add_argument("--per-gateway", type=int, default=2500)
    ap.add_argument("--gap-every", type=int, default=50)
    ap.add_argument("--slices", type=int, default=5)
    a = ap.parse_args()
    stream, key = fleet(a.gateways, a.per_gateway, a.gap_every)
    print(f"{len(stream)} batches from {a.gateways} gateways, a gap notice every {a.gap_every}")
    with tempfile.TemporaryDirectory() as d:
        for label, path in (("temporary state", None), ("file state", Path(d) / "v.db")):
            print(
                f"\n{label} (CPU time)\n  fed so far   batches/s  µs/batch over signature check"
                " + decoding"
            )
            for row in run(stream, key, path, a.slices):
                print("  " + row)
            if path is not None:
                size = sum(p.stat().st_size for p in Path(d).iterdir())
                print(f"  state files {size / 1e6:.1f} MB ({size / len(stream):.0f} B per batch)")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak RSS {rss:.0f} MiB (the pre-signed stream included)")


if __name__ == "__main__":
    main()
