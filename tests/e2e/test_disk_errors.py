"""The real daemon with its outbox on a real filesystem that starts failing every read and write
with EIO (ext4's shutdown ioctl on a loop-mounted image: what a dying SD card looks like).

`status` keeps answering — the outbox section says it is failing, the rest is there — the
watchdog stops; systemd's watchdog then kills the service (SIGABRT) with readings in memory that
were never committed. After the disk is back (remounted), the next start signs an *unclean stop*
notice right after the last batch the killed run committed, so the loss is stated, never silent;
a clean stop (SIGTERM) leaves no such notice behind."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.trust.batch import decode_payload
from edge_agent.trust.cose import verify1
from edge_agent.trust.keys import kid_of
from edge_agent.trust.loss import UNCLEAN_STOP
from edge_agent.trust.verify import ChainVerifier
from tests.support_broker import Subscriber
from tests.support_freeze import Freezable, freezable_fs

from .conftest import GW, Gateway, run_gateway, start_agent
from .test_disk_full import status, wait, watchdog_pings


@pytest.fixture
def gw_failing(tmp_path: Path) -> Iterator[tuple[Gateway, Freezable]]:
    with freezable_fs(tmp_path / "disk") as fs:

        def edit(text: str) -> str:
            return text + f'\n[outbox]\npath = "{fs.mnt}/outbox.sqlite"\ncap = "8MiB"\n'

        yield from ((gw, fs) for gw in run_gateway(tmp_path, edit=edit))


def _restart(gw: Gateway) -> None:
    gw.notes.clear()
    gw.proc = start_agent(gw.dir, gw.config, gw.dir.parent / "notify.sock")
    assert gw.wait_notify("READY=1", 30), gw.log_text()[-2000:]


@pytest.mark.timeout(240)
def test_eio_status_answers_and_the_next_start_states_what_the_killed_run_lost(
    gw_failing: tuple[Gateway, Freezable],
) -> None:
    gw, fs = gw_failing
    pub = gw.gateway_key.public_key()
    keys = {kid_of(pub): pub}
    sub = Subscriber(gw.broker.port, f"edge/{GW}/data")
    try:
        assert wait(lambda: status(gw)["outbox"]["head_seq"] > 3, 30)
        fs.shut_down()
        assert wait(lambda: not status(gw)["healthy"], 40), gw.log_text()[-2000:]
        st = status(gw)  # the whole status, the outbox section saying it fails
        box = st["outbox"]
        assert box["state"] == "failing" and box["commit_failing_s"] > 10, box
        assert "I/O error" in box["commit_error"] or "malformed" in box["commit_error"], box
        # the rest is there (the uplink may be between sessions: its acks fail on this disk)
        assert st["devices"]["total"] == 7 and st["devices"]["up"] >= 1, st
        assert st["uplink"]["configured"] is True and "sessions" in st["uplink"], st
        assert any("commits failing" in r for r in st["unhealthy"]), st["unhealthy"]
        text = gw.cli("status")
        assert text.returncode == 0 and "state" in text.stdout and "failing" in text.stdout
        assert watchdog_pings(gw, 2.5) == 0
        assert wait(lambda: status(gw)["outbox"]["backlog_readings"] > 0, 20)
        last_committed = status(gw)["outbox"]["head_seq"]
        gw.proc.send_signal(signal.SIGABRT)  # systemd's WatchdogSignal
        gw.proc.wait(20)
        fs.remount()  # the disk back in service
        _restart(gw)
        log = gw.log_text()
        assert log.count("unclean_stop previous_boot") == 1, log[-3000:]
        assert f"last_seq={last_committed} notice_seq={last_committed + 1}" in log

        def unclean() -> list[int]:
            return [p.seq for p in (decode_payload(verify1(m, keys)[1]) for m in sub.payloads())
                    if p.loss is not None and p.loss.reason == UNCLEAN_STOP]  # fmt: skip

        assert sub.wait_for(lambda: unclean() == [last_committed + 1], 30), unclean()
        notice = next(decode_payload(verify1(m, keys)[1]) for m in sub.payloads()
                      if decode_payload(verify1(m, keys)[1]).seq == last_committed + 1)
        assert notice.loss is not None and len(notice.loss.devices) == 7
        assert notice.loss.readings == 0 and notice.loss.t_first_ns < notice.loss.t_last_ns
        # a clean stop leaves nothing to announce
        head = status(gw)["outbox"]["head_seq"]
        gw.proc.send_signal(signal.SIGTERM)
        assert gw.proc.wait(20) == 0
        _restart(gw)
        assert gw.log_text().count("unclean_stop previous_boot") == 1
        assert sub.wait_for(lambda: len({decode_payload(verify1(m, keys)[1]).seq
                                         for m in sub.payloads()}) >= head, 30)  # fmt: skip
        payloads = sub.payloads()
    finally:
        sub.close()
    v = ChainVerifier(keys)
    v.feed_many(payloads)
    rep = v.summary()
    assert rep.ok and rep.gaps_unexplained == 0 and rep.broken_chain == 0, rep.problems
    assert unclean() == [last_committed + 1]
    assert any(n.startswith("unclean_stop") for n in rep.notices), rep.notices
    assert json.loads(gw.cli("status", "--json").stdout)["healthy"]
