"""kill -9 of the real agent at random moments under load, many times in a row: every batch it
accepted reaches the broker, in a chain that verifies, with no unexplained gap."""

from __future__ import annotations

import json
import random
import signal
import time

import pytest

from edge_agent.trust.batch import decode_payload
from edge_agent.trust.cose import verify1
from edge_agent.trust.keys import kid_of
from edge_agent.trust.loss import UNCLEAN_STOP
from edge_agent.trust.verify import ChainVerifier
from tests.support_broker import Subscriber

from .conftest import GW, Gateway, start_agent


@pytest.mark.timeout(240)
def test_kill9_loses_nothing_accepted(gateway: Gateway) -> None:
    gw = gateway
    rng = random.Random(1234)
    sub = Subscriber(gw.broker.port, f"edge/{GW}/data")
    try:
        for _ in range(6):
            time.sleep(rng.uniform(0.5, 2.5))
            gw.proc.send_signal(signal.SIGKILL)
            gw.proc.wait(10)
            gw.notes.clear()
            gw.proc = start_agent(gw.dir, gw.config, gw.dir.parent / "notify.sock")
            assert gw.wait_notify("READY=1", 30), gw.log_text()[-2000:]
        time.sleep(2)
        gw.proc.send_signal(signal.SIGTERM)
        assert gw.proc.wait(20) == 0
        # the last batches: restart once more and let the outbox drain completely
        gw.notes.clear()
        gw.proc = start_agent(gw.dir, gw.config, gw.dir.parent / "notify.sock")
        assert gw.wait_notify("READY=1", 30)

        keys = {kid_of(gw.gateway_key.public_key()): gw.gateway_key.public_key()}
        time.sleep(2.0)  # the outbox (resent backlog included) drains while polling goes on
        head = int(json.loads(gw.cli("buffer", "--json").stdout)["head_seq"])

        def delivered() -> set[int]:
            return {decode_payload(verify1(p, keys)[1]).seq for p in sub.payloads()}

        deadline = time.monotonic() + 60
        while not set(range(1, head + 1)) <= delivered() and time.monotonic() < deadline:
            time.sleep(0.3)
        # one snapshot for every check: polling goes on, and a batch arriving between two reads
        # of the subscriber would be in one count and not in the other
        payloads = sub.payloads()
        v = ChainVerifier(keys)
        for p in payloads:
            v.feed(p)
        rep = v.summary()
        assert rep.ok, rep
        assert rep.gaps_unexplained == 0 and rep.forged == 0 and rep.broken_chain == 0
        seqs = {decode_payload(verify1(p, keys)[1]).seq for p in payloads}
        assert set(range(1, head + 1)) <= seqs  # every batch accepted before the snapshot
        assert seqs == set(range(1, max(seqs) + 1))  # and nothing missing after it either
        assert rep.batches == max(seqs) and rep.duplicates >= 0
        boots = gw.log_text().count("agent_started")
        assert boots == 8
        # every kill -9 is stated by the next start (what it held in memory is gone); the clean
        # stop (SIGTERM) is not
        unclean = [p.seq for p in (decode_payload(verify1(m, keys)[1]) for m in sub.payloads())
                   if p.loss is not None and p.loss.reason == UNCLEAN_STOP]  # fmt: skip
        assert len(set(unclean)) == 6 and gw.log_text().count("unclean_stop previous_boot") == 6
    finally:
        sub.close()
