"""The checks of `edge-agent doctor` that answer for the service INSIDE its unit, read from the
installed unit file (platform/unit_file.py; the same parser the tests' sandbox harness uses):

* the clock, judged the way the daemon inside the unit will judge it: where the unit denies
  ``adjtimex`` (ProtectClock=yes, SystemCallFilter=~@clock) the daemon trusts only
  systemd-timesyncd's flag (platform/clock.py ``service_clock``), so a box whose clock chrony
  disciplines is synchronised for the kernel and not for the service. A running daemon's own
  verdict (``status``) comes first.
* the paths: state_dir, runtime_dir, the outbox and the Prometheus textfile must lie where the
  unit lets the service write (StateDirectory=, RuntimeDirectory=, ReadWritePaths=; never below
  /tmp, which PrivateTmp= makes private, nor /home or /root, which ProtectHome= hides); the files
  it only reads (signing key, operator keys, TLS files) must not be hidden.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

from edge_agent.cli.doctor_checks import FAIL, PASS, SKIP, WARN, Check
from edge_agent.config.model import AgentConfig
from edge_agent.platform.clock import TIMESYNC_FLAG, ClockSync, service_clock
from edge_agent.platform.unit_file import HIDDEN, PRIVATE, READ_ONLY, WRITE, ServiceUnit

CLOCK_FLOOR = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)  # a wall clock before this is not a clock
DROP_IN = "/etc/systemd/system/edge-agent.service.d/"
CHRONY_HINT = ("systemd-timesyncd (the Debian / Raspberry Pi OS default) touches the flag; with "
               "chrony or ntpd add the drop-in of docs/operations.md (ProtectClock=no, "
               "SystemCallFilter=adjtimex) and restart the service")


def _clock_denied_by(unit: ServiceUnit | None) -> str | None:
    """Why the service may not call adjtimex, or None when it may."""
    if unit is None or unit.syscall_allowed("adjtimex"):
        return None
    why = "ProtectClock=yes" if unit.flag("ProtectClock") else "SystemCallFilter="
    return f"{why} in {unit.source}"


def check_clock(allow_unsynced: bool | None, unit: ServiceUnit | None,
                daemon: dict[str, Any] | None = None, *, flag: Path = TIMESYNC_FLAG,
                kernel: ClockSync | None = None) -> Check:
    """The service's clock verdict: the running daemon's, else what the daemon in ``unit`` would
    conclude now; ``kernel`` (the caller's own view, adjtimex) tells a clock the service cannot
    see as synchronised from one that is not."""
    now = dt.datetime.now(dt.UTC)
    if now < CLOCK_FLOOR:
        return Check("clock", FAIL, f"wall clock says {now:%Y-%m-%d %H:%M} UTC",
                     "no RTC and no time service yet? readings carry a wrong wall time (with "
                     "the boot id); check `timedatectl` and the network")
    kernel = kernel or ClockSync(flag)
    denied = _clock_denied_by(unit)
    svc = service_clock(False, flag) if denied else kernel
    how = (f"adjtimex is denied to the service ({denied}): it trusts systemd-timesyncd's {flag}"
           if denied else "the service reads the kernel's verdict (adjtimex)")
    if daemon is not None and isinstance(daemon.get("clock_synced"), bool):
        synced, source, who = bool(daemon["clock_synced"]), str(daemon.get("clock_source")), \
            "the running service"
    else:
        synced, source, who = svc(), svc.source, "the service"
    if synced:
        return Check("clock", PASS, f"synchronised for {who} (source: {source}); "
                     f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} UTC")
    consequence = "; signed commands are refused (clock_unsynced) until it is" \
        if allow_unsynced is False else ""
    kernel_synced = kernel() if denied else False
    if kernel_synced and kernel.source == "adjtimex":
        return Check("clock", FAIL, f"the kernel's clock is synchronised (adjtimex), but not "
                     f"for {who}: {how}, and it says not synchronised (source: {source}); "
                     f"every reading says clock_synced=false{consequence}", CHRONY_HINT)
    return Check("clock", WARN, f"not synchronised for {who} (source: {source}; {how})"
                 f"{consequence}",
                 "readings carry clock_synced=false and the boot id; check `timedatectl` / NTP")


def _writable_dirs(unit: ServiceUnit) -> str:
    tops = [f"{p} ({setting})" for p, kind, setting in unit.rules() if kind == WRITE]
    return ", ".join(tops) or "nowhere"


def _written(cfg: AgentConfig) -> list[tuple[str, Path, str]]:
    """(config key, the directory the service writes in, what lives there)."""
    out = [("state_dir", cfg.state_dir, "state"),
           ("runtime_dir", cfg.runtime_dir, "control socket"),
           ("outbox.path", cfg.outbox.path.parent, "outbox")]
    if cfg.prometheus_textfile is not None:
        out.append(("health.prometheus_textfile", cfg.prometheus_textfile.parent, "metrics"))
    return out


def _read(cfg: AgentConfig) -> list[tuple[str, Path]]:
    out = [("keys.signing_key", cfg.keys.signing_key)]
    out += [(k, p) for k, p in (("keys.command_keys", cfg.keys.command_keys),
                                ("keys.config_keys", cfg.keys.config_keys)) if p is not None]
    up = cfg.uplink
    if up is not None and up.tls is not None:
        out += [(k, p) for k, p in (("uplink.tls.ca_file", up.tls.ca_file),
                                    ("uplink.tls.cert_file", up.tls.cert_file),
                                    ("uplink.tls.key_file", up.tls.key_file)) if p is not None]
    if up is not None and up.password_file is not None:
        out.append(("uplink.password_file", up.password_file))
    return out


PRIVATE_WHY = {
    "state": "emptied whenever the service stops: the outbox, the chain and command state lost",
    "control socket": "the CLI cannot reach the control socket there",
    "outbox": "emptied whenever the service stops: every batch not yet sent lost",
    "metrics": "node_exporter cannot read the metrics there",
}


def check_unit_paths(cfg: AgentConfig, unit: ServiceUnit | None) -> list[Check]:
    """Each path the service writes lies where its unit lets it write; each file it reads is
    visible to it. One FAIL per path that is not, else one PASS."""
    if unit is None:
        return [Check("unit paths", SKIP, "no installed edge-agent.service to check the "
                      "config's paths against", "--unit FILE names one")]
    fails: list[Check] = []
    hint = (f"move it under one of {_writable_dirs(unit)}, or allow it with ReadWritePaths= in "
            f"a drop-in ({DROP_IN}*.conf)")
    for key, directory, what in _written(cfg):
        kind, setting = unit.where(directory)
        if kind == WRITE:
            continue
        why = {HIDDEN: f"{setting} hides it from the service",
               READ_ONLY: f"read-only inside the unit ({setting})",
               PRIVATE: f"private to the service ({setting}): {PRIVATE_WHY[what]}"}[kind]
        fails.append(Check("unit paths", FAIL, f"{key}: {directory}: {why}", hint))
    for key, path in _read(cfg):
        kind, setting = unit.where(path)
        if kind in (HIDDEN, PRIVATE):
            what = "hides it from" if kind == HIDDEN else "makes /tmp private to"
            fails.append(Check("unit paths", FAIL, f"{key}: {path}: {setting} {what} the service",
                               "keep it under /etc/edge-agent or /var/lib/edge-agent"))
    if fails:
        return fails
    keys = ", ".join(k for k, _, _ in _written(cfg))
    return [Check("unit paths", PASS, f"{keys} writable inside the unit ({unit.source}); what it "
                  "reads is visible to it")]


LEAN_HINT = ("python3 was upgraded after the install: run scripts/install again from the release "
             "you installed (it recompiles the tree); meanwhile those modules load Debian's own "
             "pycs (correct, with their docstrings: more memory)")


def check_lean_stdlib(prefix: str | None = None, stdlib: str | None = None) -> Check | None:
    """The stdlib's lean bytecode beside the venv (platform/lean_stdlib.py) still matches the
    stdlib's sources; None where there is no such tree (a development venv)."""
    from edge_agent.platform.lean_stdlib import stale, tree_dir

    tree = tree_dir(prefix)
    total, bad = stale(prefix, stdlib)
    if not total:
        return None
    if not bad:
        return Check("lean bytecode", PASS, f"{total} stdlib modules as lean bytecode in {tree}")
    shown = ", ".join(bad[:3]) + (f" (+{len(bad) - 3} more)" if len(bad) > 3 else "")
    return Check("lean bytecode", WARN, f"{len(bad)} of {total} stdlib modules in {tree} no "
                 f"longer match their source: {shown}", LEAN_HINT)
