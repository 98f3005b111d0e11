"""README command 1 runs `edge-agent demo`: scripted, with faults, it must end ALL VERIFIED."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(150)
@pytest.mark.parametrize("broker", ["mosquitto", "embedded"])
def test_demo_scripted_run_verifies(broker: str) -> None:
    # README command 1 itself (the venv exists: the tests run in it)
    args = [str(ROOT / "scripts" / "demo"), "--duration", "14", "--chaos"]
    if broker == "embedded":
        args.append("--embedded-broker")
    proc = subprocess.run(args, capture_output=True, text=True, timeout=140, check=False,
                          stdin=subprocess.DEVNULL)
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    assert f"broker {broker}" in out
    assert "broker killed" in out and "broker back" in out and "meter-03 dead" in out
    assert "ALL VERIFIED" in out and "unexplained 0" in out
    verified = int(out.split("verified: ")[1].split(" batches")[0])
    assert verified > 10
