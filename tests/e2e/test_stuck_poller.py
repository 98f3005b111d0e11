"""A reload whose old poller does not stop: the daemon says so and restarts (exit 75, the unit
starts it again) instead of hanging in the reload -- polling nothing while it looks alive."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from edge_agent.service.daemon import EXIT_RESTART
from edge_agent.service.poller_stop import CANCEL_S, GRACE_S
from tests.e2e.conftest import Gateway

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.timeout(90)
def test_a_poller_that_does_not_stop_ends_in_a_controlled_restart(gateway: Gateway) -> None:
    gw = gateway
    gw.proc.send_signal(signal.SIGTERM)
    assert gw.proc.wait(20) == 0
    gw.notes.clear()
    start = len(gw.log_text())
    env = dict(os.environ, NOTIFY_SOCKET=gw.notify.getsockname(), WATCHDOG_USEC="1000000")
    with open(gw.log, "ab") as out:
        gw.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.e2e.stuck_poller", "run", "--config", str(gw.config)],
            stdout=out, stderr=out, env=env, cwd=ROOT)
    assert gw.wait_notify("READY=1", 30), gw.log_text()[start:][-3000:]
    t0 = time.monotonic()
    gw.proc.send_signal(signal.SIGHUP)
    try:
        code = gw.proc.wait(GRACE_S + CANCEL_S + 20)
    except subprocess.TimeoutExpired:
        pytest.fail("the reload hung: the daemon neither reloaded nor restarted\n"
                    + gw.log_text()[start:][-3000:])
    took = time.monotonic() - t0
    text = gw.log_text()[start:]
    assert code == EXIT_RESTART, text[-3000:]
    assert "test_poller_dropped_cancel" in text  # it was cancelled, and dropped it
    stuck = [ln for ln in text.splitlines() if " poller_stop_stuck during=" in ln]
    assert len(stuck) == 1 and "during=reload" in stuck[0] and "cancelled=yes" in stuck[0], text
    assert "restart_requested why=poller_stop_stuck exit=75" in text
    assert "config_reloaded" not in text  # no second poller beside the stuck one
    assert "exit_tasks_stuck n=1" in text and "agent_stopped" in text  # and it did exit
    assert GRACE_S + CANCEL_S <= took < GRACE_S + CANCEL_S + 15, took
