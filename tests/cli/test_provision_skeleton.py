"""provision's config skeleton: check-config says what to add next, provision says what to do
next, and the skeleton's own commented examples, uncommented, make a config that validates."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

CLI = [sys.executable, "-m", "edge_agent.cli.main"]


def test_the_skeleton_says_what_to_add_next(tmp_path: Path) -> None:
    p = subprocess.run([*CLI, "provision", "--gateway-id", "gw-7", "--config-dir",
                        str(tmp_path / "etc"), "--state-dir", str(tmp_path / "state"),
                        "--runtime-dir", str(tmp_path / "run")],
                       capture_output=True, text=True, timeout=60, check=False)
    assert p.returncode == 0, p.stderr
    assert "next: add the buses and devices" in p.stdout and "check-config" in p.stdout
    cfg = tmp_path / "etc" / "agent.toml"
    c = subprocess.run([*CLI, "check-config", str(cfg)], capture_output=True, text=True,
                       timeout=60, check=False)
    assert c.returncode == 1
    assert "at least one [[buses]] entry is needed (add the line" in c.stdout
    assert "edge-agent scan PORT finds them" in c.stdout
    # its commented examples are a working start
    text = cfg.read_text()
    block = re.search(r"(?ms)^# \[\[buses\]\].*?^# unit_id = 1\n", text)
    assert block is not None, text
    cfg.write_text(text.replace(block.group(0), re.sub(r"(?m)^# ?", "", block.group(0))))
    c = subprocess.run([*CLI, "check-config", str(cfg)], capture_output=True, text=True,
                       timeout=60, check=False)
    assert c.returncode == 0, c.stdout + c.stderr
