"""Drops in the journal: one line when a spell of drops begins, then one summary a minute — the
reviewer saw 6,787 warning lines in five minutes of an outage, one per drop."""

from __future__ import annotations

import logging

import pytest

from edge_agent.outbox.drops import DropLog
from edge_agent.trust.batch import BatchSigner, ChainHead
from tests.outbox.chains import drop_plan


def test_a_spell_of_drops_logs_a_first_line_and_one_summary_a_minute(
    caplog: pytest.LogCaptureFixture, signer: BatchSigner
) -> None:
    gap = signer.sign_gap(ChainHead(9, bytes(32)), first_seq=1, last_seq=3, readings=30,
                          t_first_ns=0, t_last_ns=0, reason="outbox_full", created_ns=0,
                          clock_synced=True)  # fmt: skip
    log = DropLog(1 << 20, every_s=60)
    caplog.set_level(logging.WARNING, "edge_agent.outbox.drops")
    for i in range(3000):  # one drop every 0.1 s for five minutes
        log.dropped(drop_plan([(1, 3)], 30), gap, now=1000 + i * 0.1)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("outbox_dropping ") and len(lines) == 5
    assert lines[1].startswith("outbox_drops period_s=60 drops=601 batches=1803 readings=18030 ")
    assert all(m.startswith("outbox_drops period_s=60 drops=600 batches=1800 readings=18000 ")
               for m in lines[2:])  # fmt: skip
    log.tick(now=1000 + 3000 * 0.1 + 1)  # drops go on being counted, not logged, under a minute
    assert len(caplog.records) == 5
    log.tick(now=1000 + 3000 * 0.1 + 61)  # a minute without drops: the spell's last summary
    assert len(caplog.records) == 6 and "drops=" in caplog.records[-1].getMessage()
    log.dropped(drop_plan([(1, 3)], 30), gap, now=5000)  # a new spell starts with a first line
    assert caplog.records[-1].getMessage().startswith("outbox_dropping ")
