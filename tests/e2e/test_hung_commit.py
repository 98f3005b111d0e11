"""The real daemon with its outbox on a real filesystem that is frozen (``fsfreeze -f`` on a
loop-mounted ext4: the commit sleeps in the kernel, no error ever comes back). The agent notices
the commit that does not return: within seconds `status` still answers and says so, the
watchdog stops (systemd restarts the service after WatchdogSec), and after the thaw everything
is healthy again."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.outbox.health import HUNG_AFTER_S
from edge_agent.service.health import COMMIT_FAILING_LIMIT_S
from tests.support_freeze import Freezable, freezable_fs

from .conftest import Gateway, run_gateway
from .test_disk_full import status, wait, watchdog_pings


@pytest.fixture
def gw_freezable(tmp_path: Path) -> Iterator[tuple[Gateway, Freezable]]:
    with freezable_fs(tmp_path / "disk") as fs:

        def edit(text: str) -> str:
            return text + f'\n[outbox]\npath = "{fs.mnt}/outbox.sqlite"\ncap = "8MiB"\n'

        for gw in run_gateway(tmp_path, edit=edit):
            try:
                yield gw, fs
            finally:
                fs.thaw()  # before the daemon is stopped: a frozen writer cannot even be killed


@pytest.mark.timeout(180)
def test_a_commit_that_never_returns_stops_the_watchdog_and_shows_in_status(
    gw_freezable: tuple[Gateway, Freezable],
) -> None:
    gw, fs = gw_freezable
    assert wait(lambda: status(gw)["outbox"]["head_seq"] > 3, 30)
    assert status(gw)["healthy"] and watchdog_pings(gw, 2.5) >= 1
    fs.freeze()
    frozen_at = time.monotonic()

    def hung() -> bool:
        st = status(gw)  # answers from memory: the frozen disk never makes it wait
        return not st["healthy"]

    assert wait(hung, COMMIT_FAILING_LIMIT_S + 20), gw.log_text()[-2000:]
    assert time.monotonic() - frozen_at > COMMIT_FAILING_LIMIT_S  # not before the bound
    t0 = time.monotonic()
    st = status(gw)
    assert time.monotonic() - t0 < 5
    reasons = " ".join(st["unhealthy"])
    assert "commit not done after" in reasons and "frozen or failing" in reasons, st
    assert "commit not done after" in st["outbox"]["commit_error"], st["outbox"]
    assert st["outbox"]["commit_failing_s"] > COMMIT_FAILING_LIMIT_S
    assert watchdog_pings(gw, 2.5) == 0  # systemd restarts it after WatchdogSec
    log = gw.log_text()
    assert log.count("outbox_commit_hung") == 1 and "watchdog_withheld" in log
    fs.thaw()
    assert wait(lambda: status(gw)["healthy"], 30), gw.log_text()[-2000:]
    assert watchdog_pings(gw, 2.5) >= 1
    assert "outbox_commit_unhung" in gw.log_text()
    assert HUNG_AFTER_S < COMMIT_FAILING_LIMIT_S
