"""README command 1 runs `edge-agent demo`: scripted, with faults, it must end ALL VERIFIED.

Both brokers the demo may use: the system mosquitto (killed and restarted) and the fallback for
machines without it, amqtt in-process (the agent's link to it cut and restored)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OUTAGE = {"mosquitto": ("broker killed", "broker back"),
          "amqtt": ("agent's link to the broker cut", "link back")}


@pytest.mark.timeout(150)
@pytest.mark.parametrize("broker", ["mosquitto", "amqtt"])
def test_demo_scripted_run_verifies(broker: str) -> None:
    # README command 1 itself (the venv exists: the tests run in it)
    args = [str(ROOT / "scripts" / "demo"), "--duration", "14", "--chaos", "--broker", broker]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=140, check=False,
                          stdin=subprocess.DEVNULL)
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    assert f"broker {broker}" in out
    down, up = OUTAGE[broker]
    assert down in out and up in out and "meter-03 dead" in out
    assert "ALL VERIFIED" in out and "unexplained 0" in out
    verified = int(out.split("verified: ")[1].split(" batches")[0])
    assert verified > 10
