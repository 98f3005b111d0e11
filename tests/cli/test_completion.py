"""Bash completion and the man page are generated from the argparse tree: every command is in
both; the script is valid bash and completes commands, sub-commands, options, choices, files,
and device / point / class names (from the config when no daemon runs); groff reads the page."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.cli.cmd_completion import walk
from edge_agent.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "device_profiles" / "examples" / "street-gateway.toml"
CLI = [sys.executable, "-m", "edge_agent.cli.main"]


def generated(what: str) -> str:
    return subprocess.run([*CLI, "completion", what], capture_output=True, text=True,
                          timeout=60, check=True).stdout


@pytest.fixture(scope="module")
def script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("completion") / "edge-agent.bash"
    path.write_text(generated("bash"))
    # the completion calls `edge-agent`: this interpreter's, on PATH
    bindir = path.parent / "bin"
    bindir.mkdir()
    exe = bindir / "edge-agent"
    exe.write_text(f"#!/bin/sh\nexec {sys.executable} -m edge_agent.cli.main \"$@\"\n")
    exe.chmod(0o755)
    return path


def complete(script: Path, *words: str) -> list[str]:
    line = " ".join(f"'{w}'" for w in words)
    prog = (f'source "{script}"; COMP_WORDS=(edge-agent {line}); '
            "COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _edge_agent; "
            'printf "%s\\n" "${COMPREPLY[@]}"')
    env = {"PATH": f"{script.parent / 'bin'}:/usr/bin:/bin", "EDGE_AGENT_CONFIG": str(EXAMPLE),
           "EDGE_AGENT_SOCKET": str(script.parent / "no.sock")}
    res = subprocess.run(["bash", "-c", prog], capture_output=True, text=True, timeout=60,
                         check=False, env=env, cwd=script.parent)
    assert res.returncode == 0 and res.stderr == "", res.stderr
    return [w for w in res.stdout.splitlines() if w]


def test_the_script_is_bash(script: Path) -> None:
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0


def test_commands_options_and_choices(script: Path) -> None:
    assert complete(script, "sta") == ["status"]
    assert set(complete(script, "")) >= {"status", "read", "modbus", "scan", "profile"}
    assert complete(script, "buffer", "ex") == ["export"]
    assert "--direct" in complete(script, "read", "--")
    assert complete(script, "scan", "--parity", "") == ["N", "E", "O"]
    assert complete(script, "modbus", "read", "bus", "1", "h") == ["holding"]
    assert complete(script, "check-config", "edge-agent.b") == ["edge-agent.bash"]


def test_names_from_the_config(script: Path) -> None:
    devices = complete(script, "read", "")
    assert devices and all(not d.startswith("-") for d in devices)
    first = devices[0]
    points = complete(script, "read", first, "")
    assert points, first
    assert complete(script, "tail", "--device", first[:3]) == [
        d for d in devices if d.startswith(first[:3])]
    assert complete(script, "tail", "--device", first, "--point", points[0]) == [
        p for p in points if p.startswith(points[0])]
    assert complete(script, "tail", "--class", "")


def test_every_command_is_on_the_man_page() -> None:
    page = generated("man")
    assert page.startswith(".TH EDGE\\-AGENT 1")
    leaves = [path for path, p in walk(build_parser()) if path and not any(
        isinstance(a, argparse._SubParsersAction) and a.required for a in p._actions)]
    assert len(leaves) > 25
    for path in leaves:
        assert f".SS {' '.join(path).replace('-', chr(92) + '-')}\n" in page, path
    for section in ("NAME", "SYNOPSIS", "COMMANDS", "EXIT STATUS", "ENVIRONMENT", "FILES"):
        assert f".SH {section}" in page
    groff = shutil.which("groff")
    if groff is None:
        pytest.skip("groff not installed: the page's syntax is not checked")
    res = subprocess.run([groff, "-man", "-Tutf8", "-z", "-wall"], input=page,
                         capture_output=True, text=True, timeout=60, check=False)
    errors = [ln for ln in res.stderr.splitlines() if "can't break" not in ln
              and "cannot adjust" not in ln]
    assert res.returncode == 0 and errors == [], res.stderr
