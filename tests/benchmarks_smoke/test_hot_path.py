"""benchmarks.hot_path: every micro-benchmark runs the real code and prints a positive figure."""

from __future__ import annotations

import subprocess
import sys

import pytest

from benchmarks.hot_path import run_group_us, timers_us


@pytest.mark.timeout(120)
def test_hot_path_prints_a_positive_figure_for_every_row() -> None:
    out = subprocess.run([sys.executable, "-m", "benchmarks.hot_path", "--requests", "300"],
                         capture_output=True, text=True, check=True, timeout=100).stdout
    rows = [line for line in out.splitlines() if line.strip()]
    assert len(rows) == 5, out
    for line in rows:
        assert line.endswith(" µs") and float(line.split()[-2]) > 0, line


def test_run_group_and_timers_measure_real_work() -> None:
    assert run_group_us(200) > 0.5  # ten decoded, filtered readings a request: not free
    assert timers_us(1000) > 0.05
