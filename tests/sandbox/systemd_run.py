"""The same service under systemd itself: a transient unit (``systemd-run``) with every property
of systemd/edge-agent.service's [Service] section, where systemd is PID 1.

It installs what the package installs for the unit to start — the user and groups from the
shipped sysusers file, the directories from the shipped tmpfiles file — and removes them again.
It refuses (the caller skips) on a box where edge-agent is really installed. Deviations from the
unit, each needed by the test host and named here: the binary is this venv's ``edge-agent``;
``DeviceAllow=char-pts rw`` (the simulated serial lines are ptys); ``ProtectHome=tmpfs`` plus a
read-only bind when the interpreter or the checkout lives under a home directory.

Same interface as ``UnitHarness`` where the sandbox test needs it.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.sandbox.harness import ROOT, TMPFILES, tmpfiles_dirs
from tests.sandbox.unit import LIFECYCLE, UnitSandbox, parse_unit

SYSUSERS = ROOT / "systemd" / "edge-agent.sysusers"
HOMES = ("/home", "/root", "/run/user")


def systemd_run_unavailable(unit: UnitSandbox) -> str | None:
    if not Path("/run/systemd/system").is_dir():
        return ("systemd is not PID 1 here (no /run/systemd/system): the transient-unit variant "
                "needs a booted systemd; the harness applies the unit instead")
    if os.geteuid() != 0:
        return "systemd-run variant: needs root (it creates the service user)"
    try:
        pwd.getpwnam(unit.user)
        return f"user {unit.user} exists: a real installation, which this test must not touch"
    except KeyError:
        pass
    for path, _ in unit.state_dirs + unit.config_dirs:
        if os.path.exists(path):
            return f"{path} exists: a real installation, which this test must not touch"
    return None


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=60, check=check)


@dataclass
class SystemdRunner:
    unit: UnitSandbox
    base: Path
    name: str = field(default_factory=lambda: f"edge-agent-sandbox-test-{os.getpid()}")
    extra_files: dict[str, bytes | None] = field(default_factory=dict)  # unsupported: real host
    mtimes: dict[str, float] = field(default_factory=dict)
    whiteouts: list[str] = field(default_factory=list)
    uid: int = 0
    gid: int = 0
    started: bool = False

    def __post_init__(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        _run("systemd-sysusers", str(SYSUSERS))
        _run("systemd-tmpfiles", "--create", str(TMPFILES))
        self.uid = pwd.getpwnam(self.unit.user).pw_uid
        self.gid = grp.getgrnam(self.unit.group).gr_gid
        for path, _ in self.unit.config_dirs:
            Path(path).mkdir(parents=True, exist_ok=True)

    def host_path(self, unit_path: str) -> Path:
        return Path(unit_path)

    @property
    def group_ids(self) -> list[int]:
        return [grp.getgrnam(g).gr_gid for g in self.unit.supplementary_groups]

    def grant_device(self, path: str) -> None:
        os.chown(path, -1, self.group_ids[0] if self.group_ids else self.gid)
        os.chmod(path, 0o660)

    def exec_start(self) -> list[str]:
        argv = list(self.unit.exec_start)
        return [str(Path(sys.executable).parent / Path(argv[0]).name), *argv[1:]]

    def properties(self) -> list[str]:
        svc = parse_unit(self.unit.path.read_text())["Service"]
        props = [f"{k}={v}" for k, v in svc if k not in LIFECYCLE and k != "ExecStart"]
        props.append("DeviceAllow=char-pts rw")
        keep = {os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix), str(ROOT)}
        under_home = sorted(k for k in keep if any(k.startswith(h + "/") for h in HOMES))
        if under_home:
            props.append("ProtectHome=tmpfs")
            props += [f"BindReadOnlyPaths={k}" for k in under_home]
        return props

    def start(self) -> None:
        argv = ["systemd-run", f"--unit={self.name}", "--quiet", "--collect"]
        argv += [f"--property={p}" for p in self.properties()]
        # Type=notify: systemd-run returns once the service sent READY=1 (or failed)
        proc = subprocess.run([*argv, "--", *self.exec_start()], capture_output=True, text=True,
                              timeout=120, check=False)
        self.started = True
        if proc.returncode != 0:
            raise AssertionError(f"systemd-run failed: {proc.stderr}\n{self.log_text()}")

    def show(self, prop: str) -> str:
        return _run("systemctl", "show", "-p", prop, "--value", self.name).stdout.strip()

    def wait_notify(self, needle: str, timeout: float = 20.0) -> bool:
        """READY=1: the start job succeeded; WATCHDOG=1: systemd recorded a keep-alive."""
        prop = {"WATCHDOG=1": "WatchdogTimestampMonotonic",
                "READY=1": "ExecMainStartTimestampMonotonic"}[needle]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.show(prop) not in ("", "0"):
                return True
            time.sleep(0.5)
        return False

    def in_sandbox(self, argv: list[str], *, uid: int, gid: int,
                   timeout: float = 20) -> subprocess.CompletedProcess[str]:
        """Another local user on the host: the real paths are the service's paths."""
        return subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
                               "--", *argv], capture_output=True, text=True, timeout=timeout,
                              check=False)

    def stop_service(self) -> int:
        """systemctl stop (SIGTERM, KillMode=mixed); the main process's exit status."""
        status = self.show("MainPID")
        _run("systemctl", "stop", self.name, check=False)
        code = self.show("ExecMainStatus")
        return int(code) if code.isdigit() else (-1 if status else -2)

    def log_text(self) -> str:
        return _run("journalctl", "-u", self.name, "-o", "cat", "--no-pager", check=False).stdout

    def close(self) -> None:
        if self.started:
            _run("systemctl", "stop", self.name, check=False)
            _run("systemctl", "reset-failed", self.name, check=False)
        for path, _ in self.unit.state_dirs + self.unit.runtime_dirs + self.unit.config_dirs:
            shutil.rmtree(path, ignore_errors=True)
        for path in tmpfiles_dirs(TMPFILES):
            if path.startswith("/run/") or "edge-agent" in path:
                shutil.rmtree(path, ignore_errors=True)
        _run("userdel", self.unit.user, check=False)
        _run("groupdel", self.unit.group, check=False)
