"""Doctor on a frozen disk (``fsfreeze -f``: writes sleep uninterruptibly until the thaw): every
probe of the state's and the outbox's paths runs in a child doctor waits for a few seconds at
most, so it still prints its whole report, names the frozen path, and exits 1 — well within the
minute a technician (or `timeout 60`) gives it. Before, it hung in D state past `timeout 60`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge_agent.cli.doctor_probe import PROBE_TIMEOUT_S
from edge_agent.trust.keys import generate_signing_key
from tests.e2e.technician import free_uid, open_dir
from tests.support_freeze import freezable_fs

WAIT_S = 45.0  # what a technician's `timeout 60` leaves, with room for a loaded test host


@pytest.mark.timeout(120)
@pytest.mark.parametrize("service", ["root", "its own user"])
def test_doctor_reports_and_exits_on_a_frozen_disk(service: str) -> None:
    """As root for a service running as root (the probes in doctor's own children), and for a
    service with its own user (the probes in children of the child that dropped to it)."""
    with open_dir() as base:
        frozen_doctor(base, service)


def frozen_doctor(tmp_path: Path, service: str) -> None:
    uid = 0 if service == "root" else free_uid()
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    generate_signing_key(keys / "signing.key")
    os.chown(keys, uid, uid)
    os.chown(keys / "signing.key", uid, uid)
    with freezable_fs(tmp_path / "disk") as fs:
        fs.mnt.chmod(0o755)
        state = fs.mnt / "state"
        state.mkdir()
        os.chown(state, uid, uid)
        cfg = tmp_path / "agent.toml"
        cfg.write_text(f'gateway_id = "gw-frozen"\nstate_dir = "{state}"\n'
                       f'runtime_dir = "{tmp_path}/run"\n\n[outbox]\ncap = "4MiB"\n\n'
                       '[[buses]]\nname = "p"\nkind = "tcp"\nhost = "127.0.0.1"\n\n'
                       '[[devices]]\nname = "l"\nprofile = "street_lamp"\nbus = "p"\n\n'
                       f'[keys]\nsigning_key = "{keys}/signing.key"\n')
        unit = tmp_path / "u.service"
        unit.write_text(f"[Service]\nUser={uid}\nGroup={uid}\n")

        def doctor() -> tuple[int, str, float]:
            """Its exit status, output and time; a doctor still running (or a pipe still held
            open) after WAIT_S fails the test, after the thaw lets it go (a process in D state
            cannot even be killed before)."""
            t0 = time.monotonic()
            proc = subprocess.Popen(
                [sys.executable, "-m", "edge_agent.cli.main", "doctor", "--config", str(cfg),
                 "--unit", str(unit), "--offline"], stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True,
                env=dict(os.environ, EDGE_AGENT_SOCKET=str(tmp_path / "none")))
            try:
                out, err = proc.communicate(timeout=WAIT_S)
            except subprocess.TimeoutExpired:
                fs.thaw()
                proc.kill()
                proc.communicate()
                pytest.fail(f"doctor gave no report within {WAIT_S} s on a frozen disk")
            return proc.returncode, out + err, time.monotonic() - t0

        _, thawed, _ = doctor()
        assert "[PASS] state dir" in thawed, thawed
        fs.freeze()
        rc, out, took = doctor()
        fs.thaw()
    lines = out.splitlines()
    assert rc == 1, out
    assert took < WAIT_S, took
    for name in ("state dir", "disk"):  # the write probe and the outbox's disk line
        line = next((ln for ln in lines if ln.startswith(f"[FAIL] {name}")), None)
        assert line is not None and str(state) in line, (name, out)
        assert f"did not answer in {PROBE_TIMEOUT_S:.0f} s" in line, (name, out)
        assert "frozen or failing" in line, (name, out)
    assert "[PASS] disk" in thawed, thawed  # the same disk thawed: the FAIL is the freeze
    # the whole report still came: the config, the key, the disk line, the clock, the summary
    for name in ("service user", "config", "signing key", "disk", "daemon", "clock"):
        assert any(ln[7:].startswith(name) for ln in lines if ln.startswith("[")), \
            (name, out)
    assert lines[-1].endswith("check(s) failed")
