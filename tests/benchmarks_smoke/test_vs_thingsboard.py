"""benchmarks.vs_thingsboard: the bench profile reads ten registers in one request (coalesced)
or ten (one per point), and a very short run of the real thing prints its table."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.vs_thingsboard import bench_profile
from edge_agent.config.model import DeviceConfig
from edge_agent.poll.device_plan import DevicePlan
from edge_agent.profiles.load import load_profiles


@pytest.mark.parametrize(("per_point", "requests"), [(False, 1), (True, 10)])
def test_bench_profile_coalesced_or_one_request_per_point(tmp_path: Path, per_point: bool,
                                                          requests: int) -> None:
    bench_profile(tmp_path, per_point)
    prof = load_profiles(tmp_path)["bench_ten"]
    dev = DeviceConfig("d", "bench_ten", "ep", max_gap=0 if per_point else None, interval_s=1.0)
    plan = DevicePlan(dev, prof)
    assert len(plan.groups) == 1 and len(prof.points) == 10
    assert len(plan.requests) == requests
    assert sorted(p.name for r in plan.requests for p in r.points) == sorted(
        p.name for p in prof.points)


@pytest.mark.timeout(120)
def test_short_run_prints_the_table() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.vs_thingsboard", "--loads", "500,500-point",
         "--devices", "3", "--seconds", "2", "--warmup", "0.5"],
        cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=110)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    rows = {cells[0]: cells[1:] for cells in (re.split(r"\s{2,}", line.strip())
                                              for line in out.splitlines())}
    assert rows["load"] == ["500", "500-point"]
    per_cpu = rows["DELIVERED SIGNED READINGS PER AGENT CPU-S"]
    assert len(per_cpu) == 2 and all(v == "inf" or float(v.replace(",", "")) > 0
                                     for v in per_cpu), out
    delivered = [float(v.replace(",", "")) for v in
                 rows["readings delivered /s (verified at consumer)"]]
    assert all(d > 0 for d in delivered), out  # every answer is new: all readings delivered
    assert rows["chain + signatures ok"] == ["True", "True"]
    for load in ("500", "500-point"):
        assert re.search(rf"verify\[{load}\]: batches=\d+ dup=0 forged=0 broken=0 gaps=0", out)
