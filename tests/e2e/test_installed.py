"""What ships is what is tested: `scripts/install --root` into a scratch root, from a copy of the
checkout holding what an earlier build left behind (build/lib with modules this version no longer
has), then the INSTALLED commands at the place a box imaged from that root has them
(/usr/local/bin/edge-agent -> /opt/edge-agent, in a mount namespace: the tree is made for that
place and names the scratch root nowhere; no PYTHONPATH, run from outside the checkout) against
the simulators of this dev venv: check-config, run, status, doctor, scan. The venv holds the
production set and nothing else (no stale file, no lab module importable), compiled lean
(tests/e2e/lean_bytecode.py), and its `edge-agent demo` says in one line how to get the demo.
Then `scripts/install --lab` adds the lab, the installed demo verifies everything, and a plain
install takes the lab away again."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from firmware_bridge.sources import NODE_FILES
from simulators.scenario import BackgroundScenario, Scenario
from tests.e2e.lean_bytecode import assert_lean_bytecode, assert_lean_stdlib
from tests.support_broker import Mosquitto
from tests.support_installed import at_final_place, installed_unavailable, names_scratch_root

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
LAB = ("simulators", "pymodbus", "amqtt")
# the edge-agent distribution's import packages; everything else in the venv is a dependency
PRODUCTION = ("device_profiles", "edge_agent", "firmware_bridge")
VENV_SEEDS = ("pip", "setuptools")  # what `python -m venv` puts in every venv
NOT_COPIED = (".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "*.pyc",
              ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis", ".micropython-wasm")
FINAL_VENV = "/opt/edge-agent/venv"
EXE = "/usr/local/bin/edge-agent"

# run by the installed venv's python (-I): its distributions (name, requirements without extras,
# files) and the top-level modules importable from its site-packages with their distributions
PROBE = """
import importlib.metadata as md, json, pkgutil, sysconfig
from pip._vendor.packaging.requirements import Requirement
site = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
dists = {}
for d in md.distributions():
    reqs = [Requirement(r) for r in d.requires or []]
    dists[d.metadata["Name"]] = {
        "requires": [r.name for r in reqs if r.marker is None or r.marker.evaluate({"extra": ""})],
        "files": [str(f) for f in d.files or []]}
owners = md.packages_distributions()
tops = {m.name: owners.get(m.name, []) for m in pkgutil.iter_modules()
        if getattr(m.module_finder, "path", None) in site}
print(json.dumps({"dists": dists, "importable": tops}))
"""


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "EDGE_AGENT_SOCKET", "EDGE_AGENT_CONFIG")}
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
    return env | extra


def sh(cmd: list[str], *, cwd: Path, timeout: float = 120,
       env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False,
                          cwd=cwd, env=env or clean_env(), stdin=subprocess.DEVNULL)


def stale_checkout(dest: Path) -> Path:
    """A copy of this checkout as a developer's looks after building an older version in it:
    build/lib still holds the lab and the old demo package."""
    shutil.copytree(ROOT, dest, symlinks=True, ignore=shutil.ignore_patterns(*NOT_COPIED))
    for stale in ("build/lib/simulators/__init__.py", "build/lib/simulators/loopback.py",
                  "build/lib/edge_agent/demo/__init__.py", "build/lib/edge_agent/demo/brokers.py"):
        (dest / stale).parent.mkdir(parents=True, exist_ok=True)
        (dest / stale).write_text("STALE = True\n")
    return dest


def install(src: Path, root: Path, *args: str) -> None:
    res = sh([str(src / "scripts" / "install"), "--root", str(root), *args], cwd=src, timeout=400)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]


def venv_contents(root: Path) -> dict[str, Any]:
    res = sh([*at_final_place(root), f"{FINAL_VENV}/bin/python", "-I", "-c", PROBE], cwd=root)
    assert res.returncode == 0, res.stderr
    got: dict[str, Any] = json.loads(res.stdout)
    return got


def lab_modules(root: Path) -> list[str]:
    """The lab's import names the installed venv can import (isolated: -I, outside the tree)."""
    probe = ("import importlib.util as u, json; "
             f"print(json.dumps([m for m in {LAB!r} if u.find_spec(m)]))")
    res = sh([*at_final_place(root), f"{FINAL_VENV}/bin/python", "-I", "-c", probe], cwd=root)
    assert res.returncode == 0, res.stderr
    found: list[str] = json.loads(res.stdout)
    return found


def assert_production_set(root: Path, src: Path) -> None:
    """The venv holds edge-agent, its dependencies (closure, no extras) and the venv's seeds,
    nothing else; nothing importable belongs elsewhere; every file of edge-agent's packages is a
    file of the source (nothing stale packed in)."""
    got = venv_contents(root)
    dists = {norm(k): v for k, v in got["dists"].items()}
    closure, todo = set(), ["edge-agent"]
    while todo:
        name = norm(todo.pop())
        if name not in closure:
            closure.add(name)
            assert name in dists, f"{name}: required, not installed"
            todo += dists[name]["requires"]
    allowed = closure | set(VENV_SEEDS)
    assert set(dists) <= allowed, f"not of the production set: {sorted(set(dists) - allowed)}"
    strays = {m: owners for m, owners in got["importable"].items()
              if not owners or not {norm(o) for o in owners} <= allowed}
    assert not strays, f"importable from the venv, outside the production set: {strays}"
    ours = sorted(m for m, owners in got["importable"].items() if "edge-agent" in map(norm, owners))
    assert ours == sorted(PRODUCTION), ours
    shipped = {f for f in dists["edge-agent"]["files"] if f.split("/")[0] in PRODUCTION
               and "__pycache__" not in f}
    source = {str(p.relative_to(src)) for pkg in PRODUCTION for p in (src / pkg).rglob("*")
              if p.is_file() and "__pycache__" not in p.parts}
    assert shipped <= source, f"installed, not in the source: {sorted(shipped - source)}"


def assert_relocated(root: Path) -> None:
    """Made for /opt/edge-agent: the tree names the scratch root nowhere, and the commands do not
    run where it was built (a box imaged from it would have them only at the final place)."""
    assert names_scratch_root(root) == []
    venv = root / "opt/edge-agent/venv"
    assert (venv / "bin/edge-agent").read_text().splitlines()[0] == f"#!{FINAL_VENV}/bin/python"
    assert f"{FINAL_VENV}\n" in (venv / "pyvenv.cfg").read_text()
    if not os.path.exists(f"{FINAL_VENV}/bin/python"):  # this host has no edge-agent installed
        with pytest.raises(FileNotFoundError):  # the interpreter its shebang names
            sh([str(venv / "bin/edge-agent"), "--version"], cwd=root)


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
    why = installed_unavailable()
    if why:
        pytest.skip(why)
    sim, broker = street
    root = tmp_path / "root"
    work = tmp_path / "work"  # outside the checkout: nothing found next to it
    work.mkdir()
    src = stale_checkout(tmp_path / "src")

    usage = sh([str(src / "scripts/install"), "--help"], cwd=work)
    assert usage.returncode == 0 and usage.stdout.startswith("usage: scripts/install")
    assert "--purge" in usage.stdout and "set -euo" not in usage.stdout

    install(src, root)
    link = root / "usr/local/bin/edge-agent"
    assert link.is_symlink() and os.readlink(link) == "../../../opt/edge-agent/venv/bin/edge-agent"
    assert link.resolve() == (root / "opt/edge-agent/venv/bin/edge-agent").resolve()
    assert_relocated(root)
    exe = [*at_final_place(root), EXE]  # the link, where the box has it
    # the production set only: nothing stale from src/build, no lab
    assert_production_set(root, src)
    assert lab_modules(root) == []
    assert_lean_bytecode(root, work, ROOT)  # no docstrings, no column tables, asserts kept
    assert_lean_stdlib(root, work)  # Debian's stdlib from the lean tree; an upgraded module not
    assert not (root / "opt/edge-agent/venv/bin/edge-sim").exists()
    assert not (root / "usr/local/bin/edge-sim").exists()
    assert (root / "opt/edge-agent/device_profiles/water_meter.toml").is_file()
    # bash completion and man page, generated from the installed command
    completion = root / "usr/local/share/bash-completion/completions/edge-agent"
    assert "complete -F _edge_agent edge-agent" in completion.read_text()
    assert sh(["bash", "-n", str(completion)], cwd=work).returncode == 0
    assert (root / "usr/local/share/man/man1/edge-agent.1").read_text().startswith(".TH EDGE")
    demo = sh([*exe, "demo"], cwd=work)
    assert demo.returncode == 2 and demo.stdout == ""
    assert len(demo.stderr.strip().splitlines()) == 1, demo.stderr
    assert "scripts/demo" in demo.stderr and "Traceback" not in demo.stderr

    # a sensor node's firmware from the installed tree: the node sources are package data
    node, profile = work / "node", "/opt/edge-agent/device_profiles/water_meter.toml"
    gen = sh([*exe, "firmware", "gen", profile, str(work / "device_map.py")], cwd=work)
    assert gen.returncode == 0, gen.stdout + gen.stderr
    bundle = sh([*exe, "firmware", "bundle", profile, str(node)], cwd=work)
    assert bundle.returncode == 0, bundle.stdout + bundle.stderr
    assert sorted(p.name for p in node.iterdir()) == sorted([*NODE_FILES, "device_map.py"])
    for name in NODE_FILES:
        assert (node / name).read_bytes() == (src / "firmware_bridge/node" / name).read_bytes()
    assert (node / "device_map.py").read_bytes() == (work / "device_map.py").read_bytes()
    check = sh([*exe, "firmware", "check", profile, str(node / "device_map.py")], cwd=work)
    assert check.returncode == 0, check.stdout + check.stderr

    # the simulated street's config, with the installed agent's own shipped profiles
    gw = tmp_path / "gw"
    config = sim.write_config(gw, mqtt_port=broker.port, gateway_id="gw-installed")
    text = re.sub(r"(?m)^profiles_dir = .*\n", "", config.read_text())
    # a configuration operator's key (made by the installed CLI) may sign bundles for this box
    ops = gw / "config-operators"
    ops.mkdir()
    made = sh([*exe, "keys", "generate", str(work / "config-op.key"), "--public",
               str(ops / "op.pub")], cwd=work)
    assert made.returncode == 0, made.stdout + made.stderr
    managed = text[text.index("[[buses]]"):text.index("[keys]")]
    text = text.replace("[keys]\n", f'[commands]\nallow_unsynced_clock = true\n\n[keys]\n'
                        f'config_keys = "{ops}"\n')
    config.write_text(text)
    check = sh([*exe, "check-config", str(config)], cwd=work)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "config ok" in check.stdout and "water_meter" in check.stdout

    env = clean_env(EDGE_AGENT_CONFIG=str(config))
    with open(tmp_path / "agent.log", "wb") as log:
        agent = subprocess.Popen([*exe, "run", "--config", str(config)], cwd=work, env=env,
                                 stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    try:
        status: dict[str, object] = {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            res = sh([*exe, "status", "--json"], cwd=work, env=env, timeout=30)
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
        # a bundle signed and sent with the installed CLI (the shipped profiles it carries are
        # package data), applied by the installed daemon in place, probation passed
        (work / "managed.toml").write_text(
            managed.replace('name = "meter-01"\n', 'name = "meter-01"\ninterval = 20\n', 1)
            + "\n[commands]\nallow_unsynced_clock = true\n")
        assert "interval = 20" in (work / "managed.toml").read_text()
        sign = sh([*exe, "config", "sign", "managed.toml", "--key", "config-op.key",
                   "--version", "1", "--gateway", "gw-installed", "--probation", "5", "--out",
                   "v1.cose"], cwd=work)
        assert sign.returncode == 0, sign.stdout + sign.stderr
        send = sh([*exe, "config", "send", "v1.cose", "--broker", f"127.0.0.1:{broker.port}",
                   "--gateway", "gw-installed", "--wait", "60", "--json"], cwd=work, timeout=90)
        assert send.returncode == 0, send.stdout + send.stderr
        assert json.loads(send.stdout)[-1]["state"] == "committed", send.stdout
        shown = sh([*exe, "config", "show", "--json"], cwd=work, env=env)
        assert json.loads(shown.stdout)["version"] == 1, shown.stdout + shown.stderr
        doctor = sh([*exe, "doctor"], cwd=work, env=env, timeout=60)
        assert "Traceback" not in doctor.stdout + doctor.stderr
        assert re.search(r"(?m)^\[PASS\] config ", doctor.stdout), doctor.stdout + doctor.stderr
        assert re.search(r"(?m)^\[PASS\] broker", doctor.stdout), doctor.stdout
    finally:
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(30) == 0, (tmp_path / "agent.log").read_text(errors="replace")[-3000:]

    # scan the RS-485 line (the daemon is stopped: one master per line)
    line = sim.paths["rs485-water"]
    scan = sh([*exe, "scan", line, "--units", "1-3", "--json"], cwd=work, timeout=120)
    assert scan.returncode == 0, scan.stdout + scan.stderr
    found = {f["unit"]: f["profiles"] for f in json.loads(scan.stdout)}
    assert set(found) == {1, 2}, found
    assert all("water_meter" in profiles for profiles in found.values()), found

    # the lab on top (a bench machine), the demo from the installed tree
    install(src, root, "--lab")
    assert_relocated(root)
    assert lab_modules(root) == list(LAB)
    assert (root / "usr/local/bin/edge-sim").is_symlink()
    demo = sh([*exe, "demo", "--duration", "12", "--chaos"], cwd=work, timeout=200)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "ALL VERIFIED" in demo.stdout and "unexplained 0" in demo.stdout
    # a plain install is the production set again
    install(src, root)
    assert_relocated(root)
    assert_production_set(root, src)
    assert not (root / "usr/local/bin/edge-sim").exists()
