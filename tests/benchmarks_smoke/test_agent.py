"""benchmarks/_agent.py: ``--agent installed`` runs what ``scripts/install`` lays down (Debian's
interpreter, the non-editable venv), checked from outside the agent process; a process of the dev
venv is refused; the tree's cache key follows what the install copies."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import _agent
from benchmarks._agent import Agent
from benchmarks.memory import commands_table, groups_table

ROOT = Path(__file__).resolve().parents[2]


def _unavailable() -> str | None:
    if not os.access(_agent.PYTHON, os.X_OK):
        return f"{_agent.PYTHON} is not installed"
    ok = subprocess.run([_agent.PYTHON, "-c", "import sys, venv, ensurepip; "
                         "sys.exit(sys.version_info < (3, 11))"], capture_output=True, check=False)
    return None if ok.returncode == 0 else f"{_agent.PYTHON}: no Python >= 3.11 with venv"


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    why = _unavailable()
    if why:
        pytest.skip(why)
    return tmp_path_factory.mktemp("installed-cache")


@pytest.fixture(scope="module")
def installed(cache: Path) -> Agent:
    return _agent.probed(_agent.installed(cache=cache))


@pytest.mark.timeout(300)
def test_the_installed_agent_is_the_laid_down_tree(installed: Agent) -> None:
    assert installed.root is not None and installed.root.parent.name.startswith("installed-cache")
    info = installed.info or {}
    site = f"{installed.root}/{_agent.VENV}/lib/python3.11/site-packages"
    assert info["real"] == os.path.realpath(_agent.PYTHON)
    assert info["site"] == site and info["editable"] == []
    assert info["edge_agent"] == f"{site}/edge_agent/__init__.py"
    assert not str(info["edge_agent"]).startswith(str(ROOT))
    assert "PYTHONPATH" not in (installed.env or {})
    # run as the unit runs it: with the installed unit's Environment=
    assert (installed.env or {}).get("PYTHONNODEBUGRANGES") == "1"
    # the memory tables run under it: its interpreter, the daemon's modules from the tree
    version = subprocess.run([_agent.PYTHON, "-c", "import sys; print(sys.version.split()[0])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert groups_table(installed).splitlines()[1].split()[:2] == ["python", version]
    run = [ln.split() for ln in commands_table(installed).splitlines() if ln.startswith("run ")]
    assert len(run) == 1 and int(run[0][-2]) > 200


@pytest.mark.timeout(300)
def test_vs_thingsboard_runs_and_checks_the_installed_agent(installed: Agent, cache: Path
                                                           ) -> None:
    """The option end to end: the benchmark reuses the laid-down tree (same source), runs the
    agent from it and reports the process it checked."""
    env = os.environ | {"EDGE_AGENT_BENCH_CACHE": str(cache)}
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.vs_thingsboard", "--loads", "500", "--devices", "3",
         "--seconds", "2", "--warmup", "0.5", "--agent", "installed"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=250, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "laying down" not in proc.stderr  # reused
    real = os.path.realpath(_agent.PYTHON)
    assert f"agent: installed: {real} " in proc.stdout
    site = f"{installed.root}/{_agent.VENV}/lib/python3.11/site-packages"
    checked = re.search(r"(?m)^agent\[500\]: checked pid \d+: exe (\S+), (\d+) extension "
                        r"modules from (\S+),", proc.stdout)
    assert checked, proc.stdout
    assert checked.group(1) == real and int(checked.group(2)) >= 1
    assert checked.group(3) == site
    assert re.search(r"verify\[500\]: batches=\d+ dup=0 forged=0 broken=0 gaps=0", proc.stdout)


@pytest.mark.timeout(120)
def test_a_dev_venv_process_is_refused(installed: Agent) -> None:
    code = "import cbor2, edge_agent.cli.main, sys; print('up', flush=True); sys.stdin.read()"
    for argv, env, ok in ((installed.python_argv("-c", code), installed.env, True),
                          ([sys.executable, "-c", code], None, False)):
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                env=env, cwd="/")
        try:
            assert proc.stdout is not None and proc.stdout.readline() == "up\n"
            if ok:
                assert f"exe {os.path.realpath(_agent.PYTHON)}," in installed.verify(proc.pid)
            else:
                with pytest.raises(RuntimeError, match="is not the installed one"):
                    installed.verify(proc.pid)
        finally:
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(10)
            assert proc.stdout is not None
            proc.stdout.close()


def test_the_cache_key_follows_what_the_install_copies(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for rel in ("pyproject.toml", "edge_agent/a.py", "edge_agent/__pycache__/a.cpython-311.pyc",
                "build/lib/edge_agent/old.py", ".venv/bin/python", "edge_agent.egg-info/PKG-INFO",
                ".git/HEAD", "docs/x.md", "tests/test_x.py", "device_profiles/x.toml"):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(rel)
    key = _agent.tree_key(src, sys.executable)
    for ignored in ("edge_agent/__pycache__/a.cpython-311.pyc", "build/lib/edge_agent/old.py",
                    ".venv/bin/python", "edge_agent.egg-info/PKG-INFO", ".git/HEAD", "docs/x.md",
                    "tests/test_x.py"):
        (src / ignored).write_text("changed")
    (src / "edge_agent/b.pyc").write_text("stray")
    assert _agent.tree_key(src, sys.executable) == key
    (src / "edge_agent/a.py").write_text("changed")
    changed = _agent.tree_key(src, sys.executable)
    assert changed != key
    (src / "edge_agent/new.py").write_text("")
    assert _agent.tree_key(src, sys.executable) != changed
    (src / "device_profiles/x.toml").write_text("changed")  # package data
    assert _agent.tree_key(src, sys.executable) not in (key, changed)
