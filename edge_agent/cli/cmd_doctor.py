"""`edge-agent doctor`: one pass/fail line per check, each with a hint. Works with no network."""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.cli.common import EXIT_FAIL, EXIT_OK, add_common, emit
from edge_agent.config.model import AgentConfig, SerialBus
from edge_agent.errors import ConfigError, EdgeAgentError


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    hint: str = ""


def check_config(path: Path) -> tuple[Check, AgentConfig | None]:
    from edge_agent.config.load import load_config

    try:
        cfg = load_config(path)
    except ConfigError as exc:
        return Check("config", False, f"{len(exc.problems)} problem(s), first: {exc.problems[0]}",
                     f"run: edge-agent check-config {path}"), None
    except OSError as exc:
        return Check("config", False, str(exc), "is the path right? (--config)"), None
    return Check("config", True, f"{path}: {len(cfg.devices)} devices, {len(cfg.buses)} buses"), cfg


def check_key(cfg: AgentConfig) -> Check:
    from edge_agent.trust.keys import fingerprint, load_signing_key

    try:
        key = load_signing_key(cfg.keys.signing_key)
    except EdgeAgentError as exc:
        return Check("signing key", False, str(exc),
                     "missing: run `edge-agent provision`; too open: "
                     f"chmod 600 {cfg.keys.signing_key}")
    return Check("signing key", True, f"{cfg.keys.signing_key} ({fingerprint(key.public_key())})")


def check_serial(cfg: AgentConfig) -> list[Check]:
    out = []
    for bus in cfg.buses.values():
        if not isinstance(bus, SerialBus):
            continue
        p = Path(bus.port)
        if not p.exists():
            out.append(Check(f"serial {bus.name}", False, f"{p} does not exist",
                             "is the USB/RS-485 adapter plugged in? `ls /dev/tty*`"))
        elif not os.access(p, os.R_OK | os.W_OK):
            out.append(Check(f"serial {bus.name}", False, f"{p} not readable/writable",
                             "add the user to the dialout group"))
        else:
            out.append(Check(f"serial {bus.name}", True, f"{p} accessible"))
    return out


def check_broker(cfg: AgentConfig, timeout_s: float = 5.0) -> Check:
    up = cfg.uplink
    if up is None:
        return Check("broker", True, "no uplink configured (local only)")
    try:
        with socket.create_connection((up.host, up.port), timeout=timeout_s) as raw:
            if up.tls is None:
                return Check("broker", True, f"{up.host}:{up.port} reachable (no TLS configured)",
                             "configure [uplink.tls] for anything beyond a lab")
            ctx = ssl.create_default_context(cafile=str(up.tls.ca_file))
            if up.tls.cert_file:
                ctx.load_cert_chain(str(up.tls.cert_file),
                                    str(up.tls.key_file) if up.tls.key_file else None)
            with ctx.wrap_socket(raw, server_hostname=up.host) as tls:
                return Check("broker", True, f"{up.host}:{up.port} TLS ok ({tls.version()})")
    except ssl.SSLError as exc:
        return Check("broker", False, f"TLS handshake failed: {exc}",
                     "check [uplink.tls] ca_file and the broker's certificate name")
    except OSError as exc:
        return Check("broker", False, f"{up.host}:{up.port}: {exc}",
                     "check the network / APN / firewall; the outbox keeps data meanwhile")


def check_clock() -> Check:
    from edge_agent.platform.clock import kernel_clock_synced

    if kernel_clock_synced():
        return Check("clock", True, "kernel reports synchronised")
    return Check("clock", False, "kernel reports NOT synchronised",
                 "readings carry monotonic time + boot id; check `timedatectl` / NTP")


def check_disk(cfg: AgentConfig) -> Check:
    target = cfg.outbox.path.parent
    while not target.exists() and target != target.parent:
        target = target.parent
    du = shutil.disk_usage(target)
    ok = du.free > min(cfg.outbox.cap_bytes, du.total // 10)
    return Check("disk", ok, f"{du.free / 2**20:.0f} MiB free of {du.total / 2**20:.0f} MiB "
                 f"at {target}; outbox cap {cfg.outbox.cap_bytes / 2**20:.0f} MiB",
                 "" if ok else "free space or lower [outbox] cap")


def run_checks(path: Path, broker: bool = True) -> list[Check]:
    first, cfg = check_config(path)
    checks = [first]
    if cfg is not None:
        steps: list[Callable[[], Check | list[Check]]] = [
            lambda: check_key(cfg), lambda: check_serial(cfg), lambda: check_disk(cfg)]
        if broker:
            steps.append(lambda: check_broker(cfg))
        for step in steps:
            r = step()
            checks.extend(r if isinstance(r, list) else [r])
    checks.append(check_clock())
    return checks


def _doctor(args: argparse.Namespace) -> int:
    checks = run_checks(args.config, broker=not args.no_broker)
    lines = []
    for c in checks:
        lines.append(f"[{'PASS' if c.ok else 'FAIL'}] {c.name:<20} {c.detail}")
        if c.hint and not c.ok:
            lines.append(f"       hint: {c.hint}")
    obj: list[dict[str, Any]] = [c.__dict__ for c in checks]
    emit(args, obj, "\n".join(lines))
    # the clock is advisory: a box without NTP still works, so it does not fail the doctor
    return EXIT_OK if all(c.ok for c in checks if c.name != "clock") else EXIT_FAIL


def register(sub: Any) -> None:
    p = sub.add_parser("doctor", help="check config, keys, serial ports, broker, clock, disk")
    add_common(p)
    p.add_argument("--no-broker", action="store_true", help="skip the broker connection check")
    p.set_defaults(func=_doctor)
