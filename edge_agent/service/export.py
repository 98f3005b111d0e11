"""`buffer export`: copy the outbox's signed batches to a directory (a USB stick).

Layout is the one `edge-agent verify --save` writes and `verify --dir` reads:
``DIR/<gateway>/<seq>.cose``, each file written then fsynced. The outbox is not changed: the
batches still go to the broker when the uplink returns (the consumer de-duplicates by seq).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from edge_agent.outbox.store import Outbox


def export_batches(outbox: Outbox, gateway_id: str, directory: Path) -> dict[str, Any]:
    target = directory / gateway_id
    target.mkdir(parents=True, exist_ok=True)
    after, count, nbytes, readings = 0, 0, 0, 0
    first = last = None
    while True:
        page = outbox.pending(after_seq=after, limit=500)
        if not page:
            break
        for b in page:
            path = target / f"{b.seq}.cose"
            with open(path, "wb") as f:
                f.write(b.cose)
                f.flush()
                os.fsync(f.fileno())
            count += 1
            nbytes += len(b.cose)
            readings += b.n_readings if b.kind == "data" else 0
            first = b.seq if first is None else first
            last = b.seq
        after = page[-1].seq
    fd = os.open(target, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return {"dir": str(target), "batches": count, "bytes": nbytes, "readings": readings,
            "first_seq": first, "last_seq": last}
