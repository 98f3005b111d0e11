"""The short chaos run: kill -9 the agent-shaped process 5 times; nothing may go missing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support_broker import Mosquitto
from tests.uplink.chaos import run_chaos
from tests.uplink.chaos_full import run_full_chaos


@pytest.mark.timeout(90)
def test_kill_9_of_the_agent_loses_no_committed_reading(tmp_path: Path, broker: Mosquitto) -> None:
    result = run_chaos(tmp_path, broker, cycles=5, seed=11)
    print(result.line())
    assert result.head > 5  # it did commit between the kills
    assert result.missing == 0, result.line()
    assert not result.out_of_order
    assert result.verify_ok, result.problems
    assert result.readings > 0


@pytest.mark.timeout(240)
def test_chaos_with_a_full_disk_announces_exactly_what_never_arrived(tmp_path: Path) -> None:
    """kill -9, broker restarts, network cuts and a full disk, mixed (short run; the long one is
    ``scripts/chaos --exhaustion``): every seq arrived or is named in a gap notice, never both."""
    result = run_full_chaos(tmp_path, cycles=16, seed=4)
    print(result.line())
    assert result.head > 50 and result.named > 0  # it did have to drop
    assert result.missing == 0 and result.contradicted == 0, result.line()
    assert result.verify.get("ok"), result.verify
    assert result.verify.get("contradicted") == 0 and result.verify.get("gaps_unexplained") == 0


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("EDGE_SLOW") != "1", reason="long chaos: EDGE_SLOW=1")
@pytest.mark.timeout(900)
def test_long_chaos_with_a_full_disk(tmp_path: Path) -> None:
    result = run_full_chaos(tmp_path, cycles=80, seed=17)
    print(result.line())
    assert result.ok, result.line()
    assert all(result.events[e] > 0 for e in ("kill", "broker", "cut", "disk", "outage"))
