"""The reviewer's long outage, compressed: the real daemon, every point reported every 0.25 s
(alarm points too, so alarm batches — kept while plain ones are dropped — split the dropped seqs
into many runs), the outbox on a real tmpfs smaller than its cap (the disk is the budget: about
160 KiB for batches), the broker out of reach for a minute and a half. Every seq the consumer does
not get must be named by a gap notice it does get: `edge-agent verify` on the delivered stream
finds no unexplained seq and no contradiction, and the readings the delivered notices name are
exactly those the agent says it dropped. The journal says so in a few summary lines, not a line
per drop."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from edge_agent.trust.batch import decode_payload
from edge_agent.trust.cose import verify1
from edge_agent.trust.keys import kid_of, public_pem
from tests.support_broker import Subscriber

from .conftest import GW, Gateway
from .test_disk_full import outbox, wait


@pytest.mark.timeout(420)
def test_a_long_outage_leaves_no_seq_unexplained(gw_tiny_outbox: Gateway, tmp_path: Path) -> None:
    gw = gw_tiny_outbox
    assert gw.proxy is not None
    keys = {kid_of(gw.gateway_key.public_key()): gw.gateway_key.public_key()}
    sub = Subscriber(gw.broker.port, f"edge/{GW}/data")  # the consumer, straight at the broker
    try:
        assert sub.wait_for(lambda: len(sub.payloads()) >= 5, 30), gw.log_text()[-2000:]
        gw.proxy.outage(True)
        t0 = time.monotonic()
        assert wait(lambda: int(outbox(gw)["gaps"]) >= 6, 240), outbox(gw)
        time.sleep(max(0.0, 90 - (time.monotonic() - t0)))
        during = outbox(gw)
        assert during["commit_error"] is None and during["readings_lost"] == 0, during
        gw.proxy.outage(False)
        assert wait(lambda: int(outbox(gw)["depth"]) <= 20, 120), outbox(gw)
        head = int(outbox(gw)["head_seq"])

        def seqs() -> set[int]:
            return {decode_payload(verify1(p, keys)[1]).seq for p in sub.payloads()}

        assert wait(lambda: max(seqs()) >= head, 60), (head, max(seqs()))
        payloads = sub.payloads()
        box = outbox(gw)
    finally:
        sub.close()
    saved = tmp_path / "saved" / GW
    saved.mkdir(parents=True)
    for raw in payloads:
        seq = decode_payload(verify1(raw, keys)[1]).seq
        (saved / f"{seq}.cose").write_bytes(raw)
    pub = tmp_path / "gw.pub.pem"
    pub.write_bytes(public_pem(gw.gateway_key))
    out = gw.cli("verify", "--key", f"{GW}={pub}", "--dir", str(saved.parent), "--json")
    rep = json.loads(out.stdout)
    assert rep["gaps_unexplained"] == 0 and rep["contradicted"] == 0, out.stdout[-3000:]
    assert out.returncode == 0 and rep["ok"] and rep["gaps_explained"] > 0, out.stdout[-2000:]
    # every reading the agent dropped is named by a delivered notice: none silently
    assert rep["readings_dropped"] == int(box["readings_dropped"]) > 0, (rep, box)
    assert rep["gap_notices"] < int(box["gaps"])  # the merged ones were never sent
    # the journal: a first line and a summary a minute, not a line per drop
    drops = re.findall(r"outbox_drop(?:ping|s) ", gw.log_text())
    assert 1 <= len(drops) <= 4, drops
