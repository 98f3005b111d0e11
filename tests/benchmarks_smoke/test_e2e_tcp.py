"""benchmarks.e2e_tcp: the generated profiles/config are what the modes claim, and a very short
run of the real thing (mosquitto, simulator, daemon, verifying consumer) prints its table."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.e2e_tcp import write_agent_config
from edge_agent.config.load import load_config
from edge_agent.poll.device_plan import DevicePlan

SIM_CFG: dict[str, Any] = {
    "buses": [{"name": "pole-001", "kind": "tcp", "host": "127.0.0.1", "port": 15020},
              {"name": "pole-002", "kind": "tcp", "host": "127.0.0.1", "port": 15021}],
    "devices": [
        {"name": "pole-001-lamp", "profile": "street_lamp", "bus": "pole-001", "unit_id": 1},
        {"name": "pole-001-env", "profile": "pole_environment", "bus": "pole-001", "unit_id": 2},
        {"name": "pole-002-lamp", "profile": "street_lamp", "bus": "pole-002", "unit_id": 1},
    ],
    "keys": {"signing_key": "signing.key"},
}


def _plans(tmp_path: Path, mode: str, devices: int) -> list[DevicePlan]:
    (tmp_path / "signing.key").write_text("placeholder: the config loader only checks paths\n")
    (tmp_path / "signing.key").chmod(0o600)  # check-config refuses a key others may read
    cfg_in = SIM_CFG | {"keys": {"signing_key": str(tmp_path / "signing.key")}}
    path = write_agent_config(tmp_path / mode, cfg_in, mode=mode, devices=devices, interval=2.0,
                              mqtt_port=1883, batch=(200, 1000))
    cfg = load_config(path)
    assert [d.name for d in cfg.devices] == [d["name"] for d in SIM_CFG["devices"][:devices]]
    assert set(cfg.buses) == {d["bus"] for d in SIM_CFG["devices"][:devices]}
    for prof in cfg.profiles.values():
        for p in prof.points:
            assert p.reporting.deadband is None
            want = None if p.reporting.alarm else p.reporting.interval_s
            assert p.reporting.heartbeat_s == want, p.name
    return [DevicePlan(d, cfg.profiles[d.profile]) for d in cfg.devices]


def test_block_mode_polls_each_device_as_one_group_of_block_reads(tmp_path: Path) -> None:
    plans = _plans(tmp_path, "block", 2)
    for plan in plans:
        assert [g.interval_s for g in plan.groups] == [2.0]
        assert len(plan.requests) < len(plan.profile.points)
    lamp = plans[0]
    assert len(lamp.requests) == 4  # coils, discretes, input 0..9, holding 0..1


def test_point_mode_sends_one_request_per_point(tmp_path: Path) -> None:
    plans = _plans(tmp_path, "point", 3)
    for plan in plans:
        assert len(plan.requests) == len(plan.profile.points)
        assert all(len(r.points) == 1 for r in plan.requests)
        assert all(2.0 <= g.interval_s < 2.02 for g in plan.groups)


@pytest.mark.timeout(90)
def test_short_run_prints_the_table() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.e2e_tcp", "--seconds", "2", "--warmup", "1",
         "--devices", "4", "--interval", "0.5",
         "--point-interval", "0.5"],
        cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=80)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    header = next(line for line in out.splitlines() if line.startswith("metric"))
    assert header.split()[1:] == ["block", "point"]
    rows = {cells[0]: cells[1:] for cells in (re.split(r"\s{2,}", line.strip())
                                              for line in out.splitlines())}
    per_cpu = rows["READINGS PER AGENT CPU-SECOND"]
    assert len(per_cpu) == 2 and all(float(v.replace(",", "")) > 0 for v in per_cpu)
    polled = rows["POLLED PER AGENT CPU-SECOND"]  # the status' readings_polled, per window
    assert len(polled) == 2 and all(float(v.replace(",", "")) > 0 for v in polled), out
    assert rows["chain + signatures ok"] == ["True", "True"]
    verified = [int(v.replace(",", "")) for v in rows["verified readings total"]]
    assert all(v > 0 for v in verified), out
    for mode in ("block", "point"):
        pattern = rf"verify\[{mode}\]: batches=\d+ dup=\d+ forged=0 broken=0 gaps=0"
        assert re.search(pattern, out), out
