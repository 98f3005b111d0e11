"""An agent-shaped process without devices: synthetic readings → batcher → outbox → MQTT uplink.

Run as ``python -m tests.uplink.soak --outbox F --key K --port P``. The chaos test and
``scripts/chaos`` kill it with SIGKILL at random moments and restart it on the same outbox; a last
run with ``--count 0 --drain`` empties the outbox and exits. Prints ``ready`` once the pipeline is
up and ``done head=<seq> depth=<n>`` at a clean exit. A test/chaos helper, not part of the agent:
it lives here, next to ``chaos.py``, so the product package holds no test drivers.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from edge_agent.config.model import BatchConfig, UplinkConfig
from edge_agent.outbox.store import Outbox
from edge_agent.outbox.writer import SigningWriter, make_gap_signer
from edge_agent.pipeline.batcher import Batcher
from edge_agent.retry import RetryPolicy
from edge_agent.trust.batch import BatchSigner
from edge_agent.trust.keys import load_signing_key
from edge_agent.uplink.mqtt import MqttUplink
from simulators.synthetic import synthetic_readings


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m tests.uplink.soak")
    ap.add_argument("--outbox", type=Path, required=True)
    ap.add_argument("--key", type=Path, required=True)
    ap.add_argument("--gateway", default="gw-soak")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--rate", type=float, default=20000.0, help="readings per second")
    ap.add_argument("--count", type=int, default=-1, help="readings to make; -1 = until killed")
    ap.add_argument("--max-readings", type=int, default=50)
    ap.add_argument("--max-ms", type=int, default=50)
    ap.add_argument("--cap-bytes", type=int, default=64 * 1024 * 1024)
    ap.add_argument("--inflight", type=int, default=16)
    ap.add_argument("--drain", action="store_true", help="wait until the outbox is empty")
    ap.add_argument("--alarm-every", type=int, default=0)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    boot_id = uuid.uuid4().hex
    signer = BatchSigner(load_signing_key(args.key), args.gateway, boot_id)
    outbox = Outbox(args.outbox, cap_bytes=args.cap_bytes, gap_signer=make_gap_signer(signer))
    uplink = MqttUplink(
        UplinkConfig(host=args.host, port=args.port, inflight=args.inflight, keepalive_s=10),
        args.gateway,
        outbox,
        boot_id=boot_id,
        retry=RetryPolicy(initial_s=0.05, max_s=0.5),
    )
    uplink.start()
    writer = SigningWriter(signer, outbox)
    batcher = Batcher(BatchConfig(args.max_readings, args.max_ms), writer,
                      on_loss=writer.commit_loss)
    print("ready", flush=True)
    chunk = 100
    made = 0
    t0 = time.monotonic()
    while args.count < 0 or made < args.count:
        n = chunk if args.count < 0 else min(chunk, args.count - made)
        batcher.add_many(synthetic_readings(n, start=made, alarm_every=args.alarm_every))
        made += n
        ahead = made / args.rate - (time.monotonic() - t0)
        if ahead > 0:
            time.sleep(ahead)
    batcher.close()
    if args.drain:
        uplink.wait_drained(60.0)
    uplink.stop()
    st = outbox.stats()
    outbox.close()
    print(f"done head={st.head_seq} depth={st.depth}", flush=True)
    return 0 if not args.drain or st.depth == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
