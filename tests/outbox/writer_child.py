"""Child process for the kill -9 durability test: appends signed batches to an outbox forever.

Prints ``ready``, then ``commit <seq>`` after every append returned (i.e. committed and synced),
``acking <seqs>`` before and ``acked`` after deleting old batches now and then. The parent kills
it with SIGKILL at a random moment.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from edge_agent.outbox.store import Outbox
from edge_agent.outbox.writer import make_gap_signer
from edge_agent.trust.batch import BatchSigner, ChainHead
from edge_agent.trust.keys import load_signing_key
from simulators.synthetic import synthetic_readings


def main() -> int:
    path, key_path, boot = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    signer = BatchSigner(load_signing_key(key_path), "gw-kill", boot)
    rng = random.Random(boot)
    box = Outbox(path, cap_bytes=1 << 30, gap_signer=make_gap_signer(signer))
    print("ready", flush=True)
    while True:
        head = ChainHead(box.head.seq, box.head.prev)
        group = []
        for _ in range(rng.randint(1, 4)):
            readings = list(synthetic_readings(rng.randint(1, 40), start=head.seq * 40))
            b = signer.sign_readings(head, readings, created_ns=0, clock_synced=True)
            group.append(b)
            head = BatchSigner.next_head(b)
        box.append(group)
        print(f"commit {group[-1].seq}", flush=True)
        if rng.random() < 0.2:
            old = [b.seq for b in box.pending(0, rng.randint(1, 5))]
            print("acking " + " ".join(map(str, old)), flush=True)
            box.ack(old)
            print("acked", flush=True)


if __name__ == "__main__":
    sys.exit(main())
