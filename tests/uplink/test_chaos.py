"""The short chaos run: kill -9 the agent-shaped process 5 times; nothing may go missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support_broker import Mosquitto
from tests.uplink.chaos import run_chaos


@pytest.mark.timeout(90)
def test_kill_9_of_the_agent_loses_no_committed_reading(tmp_path: Path, broker: Mosquitto) -> None:
    result = run_chaos(tmp_path, broker, cycles=5, seed=11)
    print(result.line())
    assert result.head > 5  # it did commit between the kills
    assert result.missing == 0, result.line()
    assert not result.out_of_order
    assert result.verify_ok, result.problems
    assert result.readings > 0
