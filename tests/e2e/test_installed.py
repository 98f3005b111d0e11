"""What ships is what is tested: `scripts/install --root` into a scratch root, then the INSTALLED
commands (through the /usr/local/bin link, no PYTHONPATH, run from outside the checkout) against
the simulators of this dev venv: check-config, run, status, doctor, scan; the production tree
holds no lab code, and its `edge-agent demo` says in one line how to get the demo. Then
`scripts/install --lab` adds the lab, the installed demo verifies everything, and a plain install
takes the lab away again."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from simulators.scenario import BackgroundScenario, Scenario
from tests.support_broker import Mosquitto

ROOT = Path(__file__).resolve().parents[2]
INSTALL = ROOT / "scripts" / "install"
HERE = Path(__file__).resolve().parent
LAB = ("simulators", "pymodbus", "amqtt")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "EDGE_AGENT_SOCKET", "EDGE_AGENT_CONFIG")}
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
    return env | extra


def sh(cmd: list[str], *, cwd: Path, timeout: float = 120,
       env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False,
                          cwd=cwd, env=env or clean_env(), stdin=subprocess.DEVNULL)


def install(root: Path, *args: str) -> None:
    res = sh([str(INSTALL), "--root", str(root), *args], cwd=ROOT, timeout=400)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]


def lab_modules(root: Path) -> list[str]:
    """The lab's import names the installed venv can import (isolated: -I, outside the tree)."""
    probe = ("import importlib.util as u, json; "
             f"print(json.dumps([m for m in {LAB!r} if u.find_spec(m)]))")
    res = sh([str(root / "opt/edge-agent/venv/bin/python"), "-I", "-c", probe], cwd=root)
    assert res.returncode == 0, res.stderr
    found: list[str] = json.loads(res.stdout)
    return found


@pytest.fixture
def street(tmp_path: Path) -> Iterator[tuple[Scenario, Mosquitto]]:
    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    bg = BackgroundScenario.load(str(HERE / "mini.toml"))  # the simulators of the dev venv
    try:
        yield bg.start(), broker
    finally:
        bg.stop()
        broker.stop()


@pytest.mark.timeout(900)
def test_the_installed_tree_runs_on_its_own(tmp_path: Path,
                                            street: tuple[Scenario, Mosquitto]) -> None:
    sim, broker = street
    root = tmp_path / "root"
    work = tmp_path / "work"  # outside the checkout: nothing found next to it
    work.mkdir()

    usage = sh([str(INSTALL), "--help"], cwd=work)
    assert usage.returncode == 0 and usage.stdout.startswith("usage: scripts/install")
    assert "--purge" in usage.stdout and "set -euo" not in usage.stdout

    install(root)
    exe = root / "usr/local/bin/edge-agent"
    assert exe.is_symlink() and os.readlink(exe) == "../../../opt/edge-agent/venv/bin/edge-agent"
    assert exe.resolve() == (root / "opt/edge-agent/venv/bin/edge-agent").resolve()
    # the production set only
    assert lab_modules(root) == []
    assert not (root / "opt/edge-agent/venv/bin/edge-sim").exists()
    assert not (root / "usr/local/bin/edge-sim").exists()
    venv_site = next((root / "opt/edge-agent/venv/lib").glob("python3*/site-packages"))
    assert not (venv_site / "edge_agent" / "demo").exists()
    assert (root / "opt/edge-agent/device_profiles/water_meter.toml").is_file()
    # bash completion and man page, generated from the installed command
    completion = root / "usr/local/share/bash-completion/completions/edge-agent"
    assert "complete -F _edge_agent edge-agent" in completion.read_text()
    assert sh(["bash", "-n", str(completion)], cwd=work).returncode == 0
    assert (root / "usr/local/share/man/man1/edge-agent.1").read_text().startswith(".TH EDGE")
    demo = sh([str(exe), "demo"], cwd=work)
    assert demo.returncode == 2 and demo.stdout == ""
    assert len(demo.stderr.strip().splitlines()) == 1, demo.stderr
    assert "scripts/demo" in demo.stderr and "Traceback" not in demo.stderr

    # the simulated street's config, with the installed agent's own shipped profiles
    gw = tmp_path / "gw"
    config = sim.write_config(gw, mqtt_port=broker.port, gateway_id="gw-installed")
    text = re.sub(r"(?m)^profiles_dir = .*\n", "", config.read_text())
    config.write_text(text)
    check = sh([str(exe), "check-config", str(config)], cwd=work)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "config ok" in check.stdout and "water_meter" in check.stdout

    env = clean_env(EDGE_AGENT_CONFIG=str(config))
    with open(tmp_path / "agent.log", "wb") as log:
        agent = subprocess.Popen([str(exe), "run", "--config", str(config)], cwd=work, env=env,
                                 stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    try:
        status: dict[str, object] = {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            res = sh([str(exe), "status", "--json"], cwd=work, env=env, timeout=30)
            if res.returncode == 0:
                status = json.loads(res.stdout)
                devices = status.get("devices", {})
                uplink = status.get("uplink", {})
                assert isinstance(devices, dict) and isinstance(uplink, dict)
                if devices.get("up") == devices.get("total") and uplink.get("connected"):
                    break
            time.sleep(0.5)
        log_text = (tmp_path / "agent.log").read_text(errors="replace")
        assert status, log_text[-3000:]
        devices = status["devices"]
        assert isinstance(devices, dict) and (devices["up"], devices["total"]) == (7, 7), status
        doctor = sh([str(exe), "doctor"], cwd=work, env=env, timeout=60)
        assert "Traceback" not in doctor.stdout + doctor.stderr
        assert re.search(r"(?m)^\[PASS\] config ", doctor.stdout), doctor.stdout + doctor.stderr
        assert re.search(r"(?m)^\[PASS\] broker", doctor.stdout), doctor.stdout
    finally:
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(30) == 0, (tmp_path / "agent.log").read_text(errors="replace")[-3000:]

    # scan the RS-485 line (the daemon is stopped: one master per line)
    line = sim.paths["rs485-water"]
    scan = sh([str(exe), "scan", line, "--units", "1-3", "--json"], cwd=work, timeout=120)
    assert scan.returncode == 0, scan.stdout + scan.stderr
    found = {f["unit"]: f["profiles"] for f in json.loads(scan.stdout)}
    assert set(found) == {1, 2}, found
    assert all("water_meter" in profiles for profiles in found.values()), found

    # the lab on top (a bench machine), the demo from the installed tree
    install(root, "--lab")
    assert lab_modules(root) == list(LAB)
    assert (root / "usr/local/bin/edge-sim").is_symlink()
    demo = sh([str(exe), "demo", "--duration", "12", "--chaos"], cwd=work, timeout=200)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "ALL VERIFIED" in demo.stdout and "unexplained 0" in demo.stdout
    # a plain install is the production set again
    install(root)
    assert lab_modules(root) == []
    assert not (root / "usr/local/bin/edge-sim").exists()
