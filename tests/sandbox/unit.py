"""Read systemd/edge-agent.service the way systemd does, as far as its sandbox goes.

``UnitSandbox.load(path)`` turns the [Service] section into the restrictions the harness applies
(tests/sandbox/launch.py): user and groups, directories and their modes, the read-only file system
with its writable paths, and the seccomp filters — SystemCallFilter= resolved with
``systemd-analyze syscall-filter`` under systemd's merge rules, plus the filters that ProtectClock=,
ProtectKernelModules=, ProtectKernelLogs=, ProtectHostname=, RestrictAddressFamilies=,
RestrictNamespaces=, RestrictRealtime=, RestrictSUIDSGID=, LockPersonality= and
MemoryDenyWriteExecute= imply.

Every directive of [Service] must be classified below (EMULATED, NOT_EMULATED with the reason, or
LIFECYCLE): a directive added to the unit that the harness does not know fails the test, so the test
follows the unit when it changes.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

from edge_agent.errors import ConfigError
from edge_agent.platform import unit_file

EMULATED = frozenset({
    "User", "Group", "SupplementaryGroups", "DynamicUser",
    "StateDirectory", "StateDirectoryMode", "ConfigurationDirectory", "ConfigurationDirectoryMode",
    "RuntimeDirectory", "RuntimeDirectoryMode", "ReadWritePaths", "ReadOnlyPaths",
    "InaccessiblePaths", "LoadCredential", "UMask",
    "CapabilityBoundingSet", "AmbientCapabilities", "NoNewPrivileges",
    "ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateMounts", "ProtectKernelTunables",
    "ProtectProc", "ProcSubset",
    "ProtectClock", "ProtectKernelModules", "ProtectKernelLogs", "ProtectHostname",
    "RestrictAddressFamilies", "RestrictNamespaces", "RestrictRealtime", "RestrictSUIDSGID",
    "LockPersonality", "MemoryDenyWriteExecute", "SystemCallArchitectures", "SystemCallFilter",
    "SystemCallErrorNumber",
    "Type", "NotifyAccess", "WatchdogSec", "ExecStart", "Environment",
})
NOT_EMULATED = {
    "DevicePolicy": "the cgroup device controller needs systemd as PID 1 (systemd-run variant)",
    "DeviceAllow": "the cgroup device controller needs systemd as PID 1 (systemd-run variant)",
    "PrivateDevices": "only =no is shipped: the host /dev is what the service sees",
    "PrivateUsers": "a user namespace mapping only root and the service's ids; access checks are "
                    "the kernel's either way (systemd-run variant)",
    "ProtectControlGroups": "/sys is read-only in the harness already (ProtectKernelTunables)",
    "RemoveIPC": "acts when the service stops",
    "MemoryMax": "a cgroup limit (systemd-run variant)",
}
LIFECYCLE = frozenset({
    "ExecReload", "Restart", "RestartSec", "TimeoutStartSec", "TimeoutStopSec", "KillMode",
    "SuccessExitStatus", "RestartForceExitStatus",
})

# what the Protect*=/Restrict*= switches add as filters of their own (systemd's execute.c)
CLOCK_GROUP = "@clock"
MODULE_GROUP = "@module"
HOSTNAME_CALLS = ("sethostname", "setdomainname")
LOG_CALLS = ("syslog",)
NAMESPACE_CALLS = ("unshare", "setns")


class UnitError(Exception):
    """The unit holds something the harness cannot apply faithfully."""


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    """The production parser (edge_agent.platform.unit_file), its problems as UnitError."""
    try:
        return unit_file.parse_unit(text)
    except ConfigError as exc:
        raise UnitError(str(exc)) from None


def environment(service: list[tuple[str, str]], path: Path) -> dict[str, str]:
    """Environment= by the production reader, its problems as UnitError."""
    try:
        return unit_file.environment(service, str(path))
    except ConfigError as exc:
        raise UnitError(str(exc)) from None


@functools.cache
def syscall_groups() -> dict[str, tuple[str, ...]]:
    """systemd's groups (``systemd-analyze syscall-filter``); the harness needs them all."""
    groups = unit_file.syscall_groups()
    if "@default" not in groups or "@system-service" not in groups:
        raise UnitError("systemd-analyze syscall-filter printed no @default/@system-service")
    return groups


def expand(name: str, groups: dict[str, tuple[str, ...]] | None = None) -> set[str]:
    try:
        return unit_file.expand(name, syscall_groups() if groups is None else groups)
    except ConfigError as exc:
        raise UnitError(str(exc)) from None


SyscallFilter = unit_file.SyscallFilter


def _merge(lines: list[str]) -> SyscallFilter | None:
    try:
        return SyscallFilter.merge(lines, syscall_groups())
    except ConfigError as exc:
        raise UnitError(str(exc)) from None


def _errno(name: str) -> int:
    try:
        return unit_file._errno(name)
    except ConfigError as exc:
        raise UnitError(str(exc)) from None


def _bool(value: str) -> bool:
    v = value.lower()
    if v in ("yes", "true", "on", "1"):
        return True
    if v in ("no", "false", "off", "0"):
        return False
    raise UnitError(f"not a boolean: {value!r}")


@dataclass
class UnitSandbox:
    """What the harness applies, derived from the unit file alone."""

    path: Path
    exec_start: list[str]
    environment: dict[str, str]  # Environment=
    watchdog_usec: int | None
    notify: bool
    user: str
    group: str
    supplementary_groups: list[str]
    umask: int
    state_dirs: list[tuple[str, int]]  # (absolute path, mode)
    runtime_dirs: list[tuple[str, int]]
    config_dirs: list[tuple[str, int]]
    read_write_paths: list[tuple[str, bool]]  # (path, optional: the '-' prefix)
    credentials: list[tuple[str, str]]  # LoadCredential= (id, source path)
    protect_system: str
    protect_home: str
    private_tmp: bool
    proc_subset_pid: bool
    protect_proc: str
    protect_kernel_tunables: bool
    no_new_privileges: bool
    capability_bounding_empty: bool
    syscall_filter: SyscallFilter | None
    syscall_errno: int | None  # SystemCallErrorNumber=; None: systemd kills the process
    restrict_families: list[str] | None
    implied_denials: dict[str, list[str]]  # why (the directive) -> syscalls denied with EPERM
    restrict_namespaces: bool
    restrict_realtime: bool
    restrict_suid_sgid: bool
    lock_personality: bool
    memory_deny_write_execute: bool
    not_emulated: dict[str, str]

    @classmethod
    def load(cls, path: Path) -> UnitSandbox:
        sections = parse_unit(path.read_text())
        svc = sections.get("Service", [])
        unknown = sorted({k for k, _ in svc} - EMULATED - set(NOT_EMULATED) - LIFECYCLE)
        if unknown:
            raise UnitError(f"{path}: [Service] directives the sandbox harness does not know: "
                            f"{', '.join(unknown)} — classify them in tests/sandbox/unit.py")
        last: dict[str, str] = {}
        every: dict[str, list[str]] = {}
        for k, v in svc:
            last[k] = v
            every.setdefault(k, []).append(v)

        def flag(key: str, default: bool = False) -> bool:
            return _bool(last[key]) if key in last else default

        if flag("DynamicUser"):
            raise UnitError("DynamicUser=yes is not emulated")
        if "User" not in last:
            raise UnitError("the unit runs as root: the harness runs a non-root service only")

        def dirs(key: str, base: str) -> list[tuple[str, int]]:
            mode = int(last.get(f"{key}Mode", "0755"), 8)
            return [(f"{base}/{d}", mode) for v in every.get(key, []) for d in v.split()]

        rw: list[tuple[str, bool]] = []
        for v in every.get("ReadWritePaths", []):
            for p in v.split():
                optional = p.startswith("-")
                rw.append((p.lstrip("-+"), optional))
        if every.get("ReadOnlyPaths") or every.get("InaccessiblePaths"):
            raise UnitError("ReadOnlyPaths=/InaccessiblePaths= are classified but not applied yet")
        creds = []
        for v in every.get("LoadCredential", []):
            cid, _, src = v.partition(":")
            creds.append((cid, src or f"/etc/credstore/{cid}"))
        families = None
        for v in every.get("RestrictAddressFamilies", []):
            if v.startswith("~"):
                raise UnitError("a deny list of address families is not emulated")
            families = (families or []) + v.split()
        implied: dict[str, list[str]] = {}
        if flag("ProtectClock"):
            implied["ProtectClock"] = sorted(expand(CLOCK_GROUP))
        if flag("ProtectKernelModules"):
            implied["ProtectKernelModules"] = sorted(expand(MODULE_GROUP))
        if flag("ProtectKernelLogs"):
            implied["ProtectKernelLogs"] = list(LOG_CALLS)
        if flag("ProtectHostname"):
            implied["ProtectHostname"] = list(HOSTNAME_CALLS)
        archs = last.get("SystemCallArchitectures", "native")
        if archs != "native":
            raise UnitError(f"SystemCallArchitectures={archs}: only 'native' is emulated")
        if last.get("CapabilityBoundingSet", "x") != "" or last.get("AmbientCapabilities", ""):
            raise UnitError("the harness drops every capability: the unit must grant none")
        wd = last.get("WatchdogSec")
        return cls(
            path=path,
            exec_start=last["ExecStart"].lstrip("-@:+!").split(),
            environment=environment(svc, path),
            watchdog_usec=_seconds(wd) * 1_000_000 if wd else None,
            notify=last.get("Type") == "notify",
            user=last["User"],
            group=last.get("Group", last["User"]),
            supplementary_groups=" ".join(every.get("SupplementaryGroups", [])).split(),
            umask=int(last.get("UMask", "0022"), 8),
            state_dirs=dirs("StateDirectory", "/var/lib"),
            runtime_dirs=dirs("RuntimeDirectory", "/run"),
            config_dirs=dirs("ConfigurationDirectory", "/etc"),
            read_write_paths=rw,
            credentials=creds,
            protect_system=last.get("ProtectSystem", "no"),
            protect_home=last.get("ProtectHome", "no"),
            private_tmp=flag("PrivateTmp"),
            proc_subset_pid=last.get("ProcSubset", "all") == "pid",
            protect_proc=last.get("ProtectProc", "default"),
            protect_kernel_tunables=flag("ProtectKernelTunables"),
            no_new_privileges=flag("NoNewPrivileges"),
            capability_bounding_empty=True,
            syscall_filter=_merge(every.get("SystemCallFilter", [])),
            syscall_errno=(_errno(last["SystemCallErrorNumber"])
                           if "SystemCallErrorNumber" in last else None),
            restrict_families=families,
            implied_denials=implied,
            restrict_namespaces=flag("RestrictNamespaces"),
            restrict_realtime=flag("RestrictRealtime"),
            restrict_suid_sgid=flag("RestrictSUIDSGID"),
            lock_personality=flag("LockPersonality"),
            memory_deny_write_execute=flag("MemoryDenyWriteExecute"),
            not_emulated={k: NOT_EMULATED[k] for k in last if k in NOT_EMULATED},
        )

    def allowed(self, syscall: str) -> bool:
        """Would the service be allowed to call ``syscall`` (ignoring argument filters)?"""
        if any(syscall in v for v in self.implied_denials.values()):
            return False
        f = self.syscall_filter
        if f is None:
            return True
        return (syscall in f.names) == f.allow_list


def _seconds(value: str) -> int:
    m = re.fullmatch(r"(\d+)\s*(s|sec|min|m)?", value.strip())
    if not m:
        raise UnitError(f"a time span the harness does not parse: {value!r}")
    return int(m.group(1)) * (60 if m.group(2) in ("min", "m") else 1)
