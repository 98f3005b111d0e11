"""`edge-agent doctor`: is this box able to run the service? One PASS / WARN / FAIL / SKIP line per
check, with a hint; exit 1 when anything FAILs, else 0.

It answers for the SERVICE, not for whoever types it. As root it reads the unit's User=, Group=
and SupplementaryGroups= and checks as that identity (a forked child that drops to it): config
(through ``load_config``, every loading and permission rule included), signing key, state
directory, serial ports, TLS files. Run by a technician it checks what it can and SKIPs, with the
reason, what only the service's rights could check (never a FAIL for the caller's own lack of
rights). Then, for anyone: the disk against the outbox's reserve and cap, the config's paths
against the unit's writable paths, Modbus TCP endpoints and the broker (TCP connect, TLS
handshake, certificate expiry), the running daemon's own view over the control socket (uplink,
devices, outbox health), and the clock as the service inside its unit judges it
(doctor_unit.py).
"""

from __future__ import annotations

import argparse
import importlib
import os
from pathlib import Path
from typing import Any

from edge_agent.cli.common import (
    DEFAULT_SOCKET,
    EXIT_FAIL,
    EXIT_OK,
    CliError,
    add_common,
    emit,
    socket_path,
)
from edge_agent.cli.doctor_checks import (
    FAIL,
    PASS,
    WARN,
    Check,
    caller_checks,
    load,
    service_checks,
)
from edge_agent.cli.doctor_disk import check_disk
from edge_agent.cli.doctor_identity import (
    NO_UNIT,
    Identity,
    myself,
    resolve,
    run_as,
    unit_identity,
)
from edge_agent.cli.doctor_unit import check_clock, check_lean_stdlib, check_unit_paths
from edge_agent.config.model import AgentConfig
from edge_agent.errors import ConfigError
from edge_agent.platform.unit_file import ServiceUnit, installed_unit

ME = "this shell"
# the checks as the service, all of them (each probe of the state's disk is bounded on its own,
# doctor_probe.PROBE_TIMEOUT_S): doctor prints its report well within a minute whatever the disk
SERVICE_CHECKS_TIMEOUT_S = 30.0


def _identity(unit_file: Path | None) -> tuple[Check, Identity | None]:
    try:
        unit = unit_identity(unit_file)
    except (OSError, ConfigError) as exc:
        return Check("service user", FAIL, f"cannot read the unit: {exc}"), None
    got = resolve(unit)
    if isinstance(got, str) and unit.source == NO_UNIT:
        me = myself(ME)
        return Check("service user", WARN, f"edge-agent is not installed as a service here (no "
                     f"unit, no user {unit.user!r}): checking as you, {me.describe()}",
                     "on a gateway: scripts/install; elsewhere --unit FILE names the user"), me
    if isinstance(got, str):
        return Check("service user", FAIL, got,
                     "scripts/install creates it (systemd-sysusers)"), None
    if got.unknown_groups:
        return Check("service user", FAIL, f"{got.describe()}: SupplementaryGroups= names "
                     f"groups that do not exist: {', '.join(got.unknown_groups)} "
                     f"({got.source})", "systemd refuses to start the unit"), got
    return Check("service user", PASS, f"{got.describe()} per {got.source}"), got


def _file_checks(config: Path, ident: Identity | None,
                 first: Check) -> tuple[list[Check], AgentConfig | None]:
    euid = os.geteuid()
    if ident is not None and euid == ident.uid:
        if ident.source != ME:
            first.detail += "; you are it: checked as you"
        checks = [Check.from_dict(d) for d in service_checks(config)]
        return [first, *checks], load(config)[1]
    if ident is not None and euid == 0:
        first.detail += "; checked as it"
        # root's own view first: the network checks need the config, and what the checks import
        # is then loaded before the child drops its rights. Whether the files it names may be
        # trusted is the child's verdict: owners are judged against the service user, which
        # root's view cannot tell from any other account
        cfg = load(config, check_files=False)[1]
        for mod in ("edge_agent.trust.keys", "cryptography.x509"):
            importlib.import_module(mod)
        # the Ed25519 backend is chosen once per process (it reads /proc/self/maps, imports a
        # codec): chosen here, the child inherits it instead of importing as the service user
        from edge_agent.trust.ed25519 import libcrypto

        libcrypto()
        got = run_as(ident, lambda: service_checks(config), timeout_s=SERVICE_CHECKS_TIMEOUT_S)
        if isinstance(got, str):
            return [first, Check("doctor", FAIL, got)], cfg
        return [first, *(Check.from_dict(d) for d in got)], cfg
    who = ident.name if ident is not None else "the service user"
    why_not = f"`sudo edge-agent doctor` checks it as {who}"
    if ident is not None:
        first.detail += (f"; you are uid {euid}: what only {who} may see is SKIPped "
                         "(sudo edge-agent doctor checks it all)")
    checks, cfg = caller_checks(config, ident, why_not)
    return [first, *checks], cfg


def _socket(args: argparse.Namespace, cfg: AgentConfig | None) -> Path:
    """The control socket as every command finds it; the default one when the config is not
    yours to read (doctor still reports, where another command would stop)."""
    try:
        return socket_path(args)
    except CliError:
        return cfg.runtime_dir / "control.sock" if cfg is not None else DEFAULT_SOCKET


def _unit(unit_file: Path | None) -> ServiceUnit | None:
    """The installed unit with its drop-ins (or --unit FILE); None when there is none or it
    cannot be read (the service user line says why)."""
    try:
        return installed_unit(unit_file)
    except (OSError, ConfigError):
        return None


def run_checks(args: argparse.Namespace) -> list[Check]:
    first, ident = _identity(args.unit)
    unit = _unit(args.unit)
    checks, cfg = _file_checks(args.config, ident, first)
    from edge_agent.cli.doctor_net import check_broker, check_endpoints, daemon_view

    view, status, devices = daemon_view(_socket(args, cfg), cfg)
    if cfg is not None:
        checks.append(check_disk(cfg, (status or {}).get("outbox")))
        checks += check_unit_paths(cfg, unit)
        if not args.offline:
            checks += check_endpoints(cfg, devices)
            if not args.no_broker:
                checks += check_broker(cfg)
    checks += view
    checks.append(check_clock(cfg.commands_allow_unsynced_clock if cfg else None, unit, status))
    lean = check_lean_stdlib()
    if lean is not None:
        checks.append(lean)
    return checks


def _doctor(args: argparse.Namespace) -> int:
    checks = run_checks(args)
    lines = []
    for c in checks:
        lines.append(f"[{c.status}] {c.name:<20} {c.detail}")
        if c.hint and c.status != PASS:
            lines.append(f"       hint: {c.hint}")
    failed = sum(c.status == FAIL for c in checks)
    lines.append(f"{failed} check(s) failed" if failed else "no check failed")
    obj: list[dict[str, Any]] = [c.as_dict() for c in checks]
    emit(args, obj, "\n".join(lines))
    return EXIT_FAIL if failed else EXIT_OK


def register(sub: Any) -> None:
    p = sub.add_parser("doctor", help="can this box run the service? config, key, state dir, "
                       "serial ports, TLS, disk, endpoints, broker, clock, the daemon's view")
    add_common(p)
    p.add_argument("--unit", type=Path, metavar="FILE",
                   help="take User=/Group=/SupplementaryGroups= from this unit file (default: "
                   "the installed edge-agent.service)")
    p.add_argument("--no-broker", action="store_true", help="skip the broker connection check")
    p.add_argument("--offline", action="store_true",
                   help="no network checks (broker, Modbus TCP endpoints)")
    p.set_defaults(func=_doctor)
