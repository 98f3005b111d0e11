"""The `export` control stream: the outbox's signed batches, page by page, to the CLI.

The daemon writes nothing: it reads pages of the outbox (``PAGE`` batches at a time, in a worker
thread so the event loop keeps polling) and hands each batch to the control server, which sends it
and waits for the socket to drain before asking for the next. Memory stays at one page however
long the outbox is; a client that goes away ends the stream at the next write. The CLI
(``edge_agent.cli.exporter``), running with the technician's rights, writes the archive
(``edge_agent.trust.archive``, documented in docs/wire-format.md).

Messages: {"ok": true, "stream": true, "gateway_id", "agent_version", "head_seq", "depth",
"bytes"}, then one {"batch": {"seq", "kind", "readings", "cose": base64}} per batch in seq order up
to ``head_seq`` (the head when the export began), then {"end": {"batches", "bytes", "readings",
"first_seq", "last_seq"}}. The outbox is not changed: the batches still go to the broker when the
uplink returns (the consumer de-duplicates by seq). A batch the broker acknowledges while the
export runs may be missing from it (it was delivered).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from typing import Any

import edge_agent
from edge_agent.outbox.store import Outbox

PAGE = 32  # batches read per outbox query (a batch is a few KiB; a page stays well under 1 MiB)


async def export_stream(outbox: Outbox, gateway_id: str,
                        after_seq: int = 0) -> AsyncIterator[dict[str, Any]]:
    st = await asyncio.to_thread(outbox.stats)
    head_seq = outbox.head.seq
    yield {"ok": True, "stream": True, "gateway_id": gateway_id,
           "agent_version": edge_agent.__version__, "head_seq": head_seq, "depth": st.depth,
           "bytes": st.bytes}
    after, count, nbytes, readings = max(0, after_seq), 0, 0, 0
    first: int | None = None
    last: int | None = None
    while after < head_seq:
        page = await asyncio.to_thread(outbox.pending, after, PAGE)
        page = [b for b in page if b.seq <= head_seq]
        if not page:
            break
        for b in page:
            n = b.n_readings if b.kind == "data" else 0
            yield {"batch": {"seq": b.seq, "kind": b.kind, "readings": n,
                             "cose": base64.b64encode(b.cose).decode("ascii")}}
            count, nbytes, readings = count + 1, nbytes + len(b.cose), readings + n
            first = b.seq if first is None else first
            last = b.seq
        after = page[-1].seq
    yield {"end": {"batches": count, "bytes": nbytes, "readings": readings, "first_seq": first,
                   "last_seq": last}}
