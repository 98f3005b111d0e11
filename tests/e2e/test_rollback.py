"""Anti-rollback with the real daemon and a real broker: the state directory is restored from an
older copy and the agent restarted — while the broker is down, so it signs batches offline whose
seqs were already published; it must re-chain them past its witness before publishing. The
consumer sees every seq exactly once, one signed resume notice explaining the move, and a chain
that verifies."""

from __future__ import annotations

import hashlib
import re
import shutil
import signal
import time

import pytest

from edge_agent.trust.batch import decode_payload
from edge_agent.trust.cose import verify1
from edge_agent.trust.keys import kid_of
from edge_agent.trust.verify import ChainVerifier
from tests.support_broker import Subscriber

from .conftest import GW, Gateway, start_agent


def _restart(gw: Gateway) -> None:
    gw.notes.clear()
    gw.proc = start_agent(gw.dir, gw.config, gw.dir.parent / "notify.sock")
    assert gw.wait_notify("READY=1", 30), gw.log_text()[-2000:]


def _stop(gw: Gateway) -> None:
    gw.proc.send_signal(signal.SIGTERM)
    assert gw.proc.wait(20) == 0, gw.log_text()[-2000:]


@pytest.mark.timeout(180)
def test_restored_state_directory_never_signs_a_published_seq_twice(gateway: Gateway) -> None:
    gw = gateway
    keys = {kid_of(gw.gateway_key.public_key()): gw.gateway_key.public_key()}
    sub = Subscriber(gw.broker.port, f"edge/{GW}/data", client_id="audit", persistent=True)
    state = gw.dir / "state"
    copy = gw.dir.parent / "state-copy"
    # the broker keeps retained messages and sessions across its restart (as in production)
    conf = gw.broker.conf.read_text()
    gw.broker.conf.write_text(conf.replace("persistence false", "persistence true"))
    gw.broker.restart(signal.SIGTERM)
    try:

        def wait_batches(n: int, timeout: float = 40) -> None:
            assert sub.wait_for(lambda: len(sub.payloads()) >= n, timeout), gw.log_text()[-2000:]

        wait_batches(5)
        _stop(gw)
        shutil.copytree(state, copy)  # the older copy: taken at about seq 5
        _restart(gw)
        wait_batches(len(sub.payloads()) + 20)
        _stop(gw)
        time.sleep(0.5)
        published_before = len(sub.payloads())
        gw.broker.stop(signal.SIGTERM)
        shutil.rmtree(state)
        shutil.copytree(copy, state)  # restored: the agent forgets ~20 published seqs
        _restart(gw)
        time.sleep(3)  # signing offline: seqs that collide with published ones
        gw.broker.start()
        wait_batches(published_before + 10)
        _stop(gw)
        time.sleep(0.5)

        by_seq: dict[int, set[bytes]] = {}
        kinds: dict[str, int] = {}
        for msg in sub.payloads():
            p = decode_payload(verify1(msg, keys)[1])
            by_seq.setdefault(p.seq, set()).add(hashlib.sha256(msg).digest())
            kinds[p.kind] = kinds.get(p.kind, 0) + 1
        twice = {s: len(d) for s, d in by_seq.items() if len(d) > 1}
        assert twice == {}, f"seqs signed twice: {twice}"
        assert set(by_seq) == set(range(1, max(by_seq) + 1))  # nothing lost either
        assert kinds.get("resume") == 1, kinds
        v = ChainVerifier(keys)
        v.feed_many(sub.payloads())
        rep = v.summary()
        assert rep.ok, rep.problems
        assert (rep.conflicts, rep.broken_chain, rep.gaps_unexplained, rep.resumes) == (0, 0, 0, 1)
        log = gw.log_text()
        assert log.count("chain_rollback") == 1 and log.count("chain_witness state=ok") >= 1
        moved = re.search(r"chain_rollback witness_seq=(\d+) .*resigned=(\d+)", log)
        assert moved is not None and int(moved.group(2)) >= 5, moved  # offline batches moved
        assert int(moved.group(1)) >= published_before - 1
    finally:
        sub.close()
