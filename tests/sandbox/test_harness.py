"""The harness itself: systemd's filter semantics, the unit read as systemd reads it, and the
restrictions really in force for a process it starts (so a sandbox test can fail)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.sandbox.harness import ROOT, UNIT_FILE, UnitHarness
from tests.sandbox.unit import SyscallFilter, UnitError, UnitSandbox, parse_unit

GROUPS = {
    "@default": ("execve", "exit"),
    "@clock": ("adjtimex", "clock_settime"),
    "@privileged": ("@clock", "@chown", "setuid"),
    "@chown": ("chown", "fchown"),
    "@system-service": ("@default", "@chown", "read", "write", "setuid"),
}


def test_an_allow_list_starts_with_default_and_tilde_lines_take_from_it() -> None:
    f = SyscallFilter.merge(["@system-service", "~@privileged"], GROUPS)
    assert f is not None and f.allow_list
    assert set(f.names) == {"execve", "exit", "read", "write"}


def test_a_later_plain_line_adds_back_to_an_allow_list() -> None:
    f = SyscallFilter.merge(["@system-service", "~@privileged", "adjtimex"], GROUPS)
    assert f is not None and "adjtimex" in f.names and "clock_settime" not in f.names


def test_a_deny_list_and_its_exceptions_and_a_reset() -> None:
    f = SyscallFilter.merge(["~@clock @chown", "fchown"], GROUPS)
    assert f is not None and not f.allow_list
    assert set(f.names) == {"adjtimex", "clock_settime", "chown"}
    f = SyscallFilter.merge(["~@clock", "", "read"], GROUPS)
    assert f is not None and f.allow_list and set(f.names) == {"execve", "exit", "read"}
    f = SyscallFilter.merge(["~chown:EACCES"], GROUPS)
    assert f is not None and f.names == {"chown": 13}


def test_the_shipped_unit_as_systemd_reads_it() -> None:
    u = UnitSandbox.load(UNIT_FILE)
    assert u.syscall_filter is not None and u.syscall_filter.allow_list
    for denied in ("adjtimex", "clock_settime", "settimeofday", "chown", "fchown", "mount",
                   "reboot", "ptrace"):
        assert not u.allowed(denied), denied
    for allowed in ("read", "openat", "socket", "sendto", "fsync", "fchmod", "rename"):
        assert u.allowed(allowed), allowed
    assert u.user == "edge-agent" and u.group == "edge-agent"
    assert ("/var/lib/edge-agent", 0o700) in u.state_dirs
    assert u.protect_system == "strict" and u.proc_subset_pid and u.no_new_privileges
    assert u.environment == {"PYTHONNODEBUGRANGES": "1"}


def test_environment_as_systemd_reads_it(tmp_path: Path) -> None:
    unit = tmp_path / "x.service"
    unit.write_text(UNIT_FILE.read_text().replace(
        "[Service]\n", "[Service]\nEnvironment=A=1 \"B=two words\" C=\nEnvironment=A=3\n"))
    assert UnitSandbox.load(unit).environment == {
        "A": "3", "B": "two words", "C": "", "PYTHONNODEBUGRANGES": "1"}
    text = unit.read_text()
    unit.write_text(text.replace("[Install]", "Environment=\nEnvironment=D=4\n[Install]"))
    assert UnitSandbox.load(unit).environment == {"D": "4"}
    unit.write_text(text.replace("[Install]", "Environment=novalue\n[Install]"))
    with pytest.raises(UnitError, match="novalue"):
        UnitSandbox.load(unit)


def test_a_directive_the_harness_does_not_know_fails(tmp_path: Path) -> None:
    unit = tmp_path / "x.service"
    unit.write_text(UNIT_FILE.read_text().replace("[Service]\n",
                                                  "[Service]\nBindPaths=/srv/data\n"))
    with pytest.raises(UnitError, match="BindPaths"):
        UnitSandbox.load(unit)


def test_continuation_lines_and_comments() -> None:
    s = parse_unit("# c\n[Service]\nA=1\\\n  2\n; d\nA=3\n")
    assert s == {"Service": [("A", "1 2"), ("A", "3")]}


@pytest.mark.timeout(60)
def test_a_process_in_the_harness_meets_the_units_restrictions(unit: UnitSandbox,
                                                              tmp_path: Path) -> None:
    marker = Path("/tmp") / f"edge-agent-probe-{tmp_path.name}"
    marker.touch()
    h = UnitHarness(unit, tmp_path / "sandbox")
    try:
        state, config = unit.state_dirs[0][0], unit.config_dirs[0][0]
        r = h.start([sys.executable, str(ROOT / "tests" / "sandbox" / "probe.py"), state, config,
                     str(marker)])
        assert r.proc.wait(30) == 0, r.log_text()
        got = json.loads(r.log_text().strip().splitlines()[-1])
    finally:
        h.close()
        marker.unlink()
    boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    eperm, erofs = "Operation not permitted", "Read-only file system"
    assert got == {
        "uid": h.uid, "gid": h.gid, "groups": h.group_ids, "umask": 0o077,
        "no_new_privs": "1", "cap_bnd": "0000000000000000", "seccomp": "2",
        "adjtimex": eperm, "chown_own_file": eperm,
        "write_state": "ok", "write_config": erofs, "write_usr": erofs, "write_tmp": "ok",
        "host_tmp_visible": False,
        "netlink": "Address family not supported by protocol", "inet": "ok",
        "mmap_wx": eperm, "unshare": eperm,
        "proc_sys": False, "boot_id_credential": boot_id,
        "root_listing": got["root_listing"], "columns": False,
    }
    # ProtectHome: nothing of /root but the test host's interpreter, grafted back
    assert all(str(ROOT).startswith("/root/" + x) or sys.base_prefix.startswith("/root/" + x)
               for x in got["root_listing"]), got["root_listing"]
