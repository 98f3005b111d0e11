"""The shipped unit is scored and verified by systemd's own tools (offline)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "edge-agent.service"


@pytest.mark.timeout(60)
def test_exposure_at_most_1_5() -> None:
    out = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(UNIT)],
        capture_output=True, text=True, timeout=50, check=False,
    ).stdout
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out)
    assert m, out
    assert float(m.group(1)) <= 1.5, out


@pytest.mark.timeout(60)
def test_verify_clean(tmp_path: Path) -> None:
    # verify checks that ExecStart exists: point it at a real executable, keep everything else
    exe = shutil.which("edge-agent") or str(Path(sys.executable).parent / "edge-agent")
    text = UNIT.read_text().replace("/opt/edge-agent/venv/bin/edge-agent", exe)
    unit = tmp_path / "edge-agent.service"
    unit.write_text(text)
    proc = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True, text=True, timeout=50, check=False,
    )
    noise = [ln for ln in proc.stderr.splitlines() if ln.strip() and "edge-agent" in ln]
    assert proc.returncode == 0 and not noise, proc.stderr


def test_unit_has_the_life_cycle_we_rely_on() -> None:
    text = UNIT.read_text()
    for needle in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "StateDirectory=",
                   "ConfigurationDirectory=", "RuntimeDirectory=", "SupplementaryGroups=dialout",
                   "DeviceAllow=char-ttyUSB rw", "ExecReload=/bin/kill -HUP $MAINPID"):
        assert needle in text, needle


def test_unit_restarts_on_the_daemons_controlled_restart() -> None:
    """A configuration change that needs a restart ends the daemon with EXIT_RESTART: the unit
    must restart it (and not count it as a failure)."""
    from edge_agent.service.daemon import EXIT_RESTART

    text = UNIT.read_text()
    assert f"RestartForceExitStatus={EXIT_RESTART}" in text
    assert f"SuccessExitStatus={EXIT_RESTART}" in text
