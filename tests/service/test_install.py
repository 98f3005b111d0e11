"""install → provision → decommission in a scratch root, with the real script and CLI."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run(cmd: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=170, check=False, env=env)


@pytest.mark.timeout(240)
def test_install_provision_decommission(tmp_path: Path) -> None:
    root = tmp_path / "root"
    # a real install (dependencies from the package index), in a venv of its own
    first = run([str(ROOT / "scripts" / "install"), "--root", str(root)])
    assert first.returncode == 0, first.stderr
    exe = root / "opt/edge-agent/venv/bin/edge-agent"
    assert exe.exists()
    # made for /opt/edge-agent, it does not run here: the venv's python runs the entry module
    cli = [str(root / "opt/edge-agent/venv/bin/python"), "-I", "-m", "edge_agent.cli.main"]
    assert (root / "etc/systemd/system/edge-agent.service").exists()
    assert "edge-agent:x:" in (root / "etc/passwd").read_text()
    assert "dialout:x:20:edge-agent" in (root / "etc/group").read_text()
    assert (root / "opt/edge-agent/device_profiles/street_lamp.toml").exists()
    completion = root / "usr/local/share/bash-completion/completions/edge-agent"
    manpage = root / "usr/local/share/man/man1/edge-agent.1"
    assert "complete -F _edge_agent" in completion.read_text() and manpage.exists()
    # idempotent
    again = run([str(ROOT / "scripts" / "install"), "--root", str(root)])
    assert again.returncode == 0, again.stderr
    assert (root / "etc/passwd").read_text().count("edge-agent:x:") == 1

    state, conf = root / "var/lib/edge-agent", root / "etc/edge-agent"
    prov = [*cli, "provision", "--gateway-id", "gw-scratch", "--config-dir", str(conf),
            "--state-dir", str(state), "--runtime-dir", str(root / "run/edge-agent"),
            "--profiles-dir", str(root / "opt/edge-agent/device_profiles")]
    p1 = run(prov)
    assert p1.returncode == 0, p1.stderr
    key = state / "keys/signing.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert "fingerprint  sha256:" in p1.stdout and "BEGIN PUBLIC KEY" in p1.stdout
    before = key.read_bytes()
    p2 = run(prov)
    assert p2.returncode != 0 and "refusing to overwrite" in p2.stderr
    assert key.read_bytes() == before
    (state / "outbox.db").write_bytes(b"x")

    dec = run([str(ROOT / "scripts" / "install"), "--root", str(root), "--decommission"])
    assert dec.returncode == 0, dec.stderr
    assert not key.exists() and not (state / "keys").exists()
    assert not (state / "outbox.db").exists()
    assert exe.exists()  # software stays unless --purge
    purge = run([str(ROOT / "scripts" / "install"), "--root", str(root), "--decommission",
                 "--purge"])
    assert purge.returncode == 0 and not exe.exists() and not conf.exists()
    assert not completion.exists() and not manpage.exists()
