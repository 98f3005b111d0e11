"""The checks of `edge-agent doctor` that look at files: the config (through ``load_config``, so
every rule of config loading and of ``config.permissions`` appears here too), the signing key,
the state directory, serial ports, TLS files and certificates (the disk: doctor_disk.py).

``service_checks`` runs as the service's identity (``doctor_identity.run_as``) and answers for
the service; ``caller_checks`` runs as whoever typed the command and says SKIP, with the reason,
for what only the service's identity could check.
"""

from __future__ import annotations

import datetime as dt
import errno
import grp
import os
import ssl
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edge_agent.cli.doctor_identity import Identity, may_access
from edge_agent.cli.doctor_probe import NoAnswer, in_child, write_probe
from edge_agent.config.model import AgentConfig, SerialBus
from edge_agent.errors import ConfigError, EdgeAgentError

PASS, WARN, FAIL, SKIP = "PASS", "WARN", "FAIL", "SKIP"
EXPIRY_WARN_DAYS = 30
FROZEN_HINT = ("is it frozen (`fsfreeze -u MOUNTPOINT`) or failing (`dmesg`)? the outbox cannot "
               "commit meanwhile")


@dataclass
class Check:
    name: str
    status: str  # PASS | WARN | FAIL | SKIP
    detail: str
    hint: str = ""

    @property
    def ok(self) -> bool:
        return self.status != FAIL

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"ok": self.ok}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Check:
        return cls(str(d["name"]), str(d["status"]), str(d["detail"]), str(d.get("hint", "")))


def _why(exc: OSError) -> str:
    return f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")


def load(path: Path, *, check_files: bool = True) -> tuple[list[Check], AgentConfig | None]:
    """The config as the daemon would load it, with every problem and warning as a line.
    ``check_files=False``: only what the config says, not whether the files it names may be
    trusted (root's own view when the service's identity judges them)."""
    from edge_agent.config.load import load_config

    try:
        cfg = load_config(path, check_files=check_files)
    except ConfigError as exc:
        return [Check("config", FAIL, str(p), f"edge-agent check-config {path}")
                for p in exc.problems], None
    except PermissionError as exc:
        return [Check("config", FAIL, f"cannot read: {_why(exc)}",
                      "the config must be readable by the service: chgrp edge-agent FILE; "
                      "chmod 640 FILE")], None
    except OSError as exc:
        return [Check("config", FAIL, _why(exc), "is the path right? (--config)")], None
    checks = [Check("config", PASS, f"{path}: {len(cfg.devices)} devices, {len(cfg.buses)} buses")]
    checks += [Check("config", WARN, str(w), w.hint) for w in getattr(cfg, "warnings", ())]
    return checks, cfg


def bounded(name: str, path: Path, fn: Callable[[], Check]) -> Check:
    """``fn()`` in a child doctor waits for a few seconds at most (``doctor_probe``): a probe
    of the state's or the outbox's disk that would hang (frozen, failing) is a FAIL that says
    so, and the rest of the report still comes."""
    try:
        return Check.from_dict(in_child(lambda: fn().as_dict()))
    except NoAnswer as exc:
        if exc.seconds is None:
            return Check(name, FAIL, f"{path}: the check failed: {exc}")
        return Check(name, FAIL, f"{path}: {exc}", FROZEN_HINT)


def check_key(cfg: AgentConfig) -> Check:
    return bounded("signing key", cfg.keys.signing_key, lambda: _check_key(cfg))


def _check_key(cfg: AgentConfig) -> Check:
    from edge_agent.trust.keys import fingerprint, load_signing_key

    try:
        key = load_signing_key(cfg.keys.signing_key)
    except EdgeAgentError as exc:
        return Check("signing key", FAIL, str(exc),
                     "missing: run `edge-agent provision`; the rest: the message says the fix")
    return Check("signing key", PASS, f"{cfg.keys.signing_key} ({fingerprint(key.public_key())})")


def check_writable(name: str, directory: Path) -> Check:
    """Create, fsync and remove a file in ``directory`` (what the outbox will need), bounded."""
    return bounded(name, directory, lambda: _check_writable(name, directory))


def _check_writable(name: str, directory: Path) -> Check:
    try:
        write_probe(directory)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):  # the disk line judges the space
            return Check(name, WARN, f"{directory}: no room for doctor's test file "
                         f"({_why(exc)}); its permissions are not tested",
                         "the free-space verdict follows")
        return Check(name, FAIL, f"cannot write in {directory}: {_why(exc)}",
                     f"StateDirectory= should make it: chown edge-agent: {directory}")
    return Check(name, PASS, f"{directory} writable")


def check_serial(bus: SerialBus) -> Check:
    p = Path(bus.port)
    name = f"serial {bus.name}"
    if not p.exists():
        return Check(name, FAIL, f"{p} does not exist",
                     "is the USB/RS-485 adapter plugged in? `ls -l /dev/serial/by-id/`")
    if not os.access(p, os.R_OK | os.W_OK):
        return Check(name, FAIL, f"{p} is not readable and writable",
                     "the service is in the dialout group (SupplementaryGroups=dialout); is the "
                     f"device's group dialout? `ls -l {p}`")
    return Check(name, PASS, f"{p} readable and writable")


def _certs(path: Path) -> list[Any]:
    from cryptography import x509

    data = path.read_bytes()
    if b"-----BEGIN" in data:
        return list(x509.load_pem_x509_certificates(data))
    return [x509.load_der_x509_certificate(data)]


def check_cert(name: str, path: Path, *, leaf: bool, now: dt.datetime | None = None) -> Check:
    """Expiry of a certificate file: a client certificate (``leaf``: its first certificate) or
    a CA bundle (FAIL only when nothing in it is valid now)."""
    now = now or dt.datetime.now(dt.UTC)
    try:
        certs = _certs(path)
    except OSError as exc:
        return Check(name, FAIL, f"cannot read: {_why(exc)}",
                     "the service must be able to read it: chgrp edge-agent FILE; chmod 640 FILE")
    except ValueError as exc:
        return Check(name, FAIL, f"{path}: not a certificate: {exc}")
    if not certs:
        return Check(name, FAIL, f"{path}: no certificate in it")
    checked = certs[:1] if leaf else certs
    valid = [c for c in checked if c.not_valid_before_utc <= now < c.not_valid_after_utc]
    first = checked[0]
    subject = first.subject.rfc4514_string() or "(no subject)"
    if not valid:
        if first.not_valid_before_utc > now:
            return Check(name, FAIL, f"{path}: {subject} not valid before "
                         f"{first.not_valid_before_utc:%Y-%m-%d %H:%M} UTC",
                         "is the clock right? (`timedatectl`)")
        return Check(name, FAIL, f"{path}: {subject} expired on "
                     f"{first.not_valid_after_utc:%Y-%m-%d %H:%M} UTC",
                     "install a renewed certificate, then `systemctl restart edge-agent`")
    soonest = min(c.not_valid_after_utc for c in valid)
    days = (soonest - now).days
    if days < EXPIRY_WARN_DAYS:
        return Check(name, WARN, f"{path}: expires in {days} day{'' if days == 1 else 's'} "
                     f"({soonest:%Y-%m-%d})",
                     "renew it before then")
    return Check(name, PASS, f"{path}: valid until {soonest:%Y-%m-%d}")


def check_tls_files(cfg: AgentConfig, skip_unreadable: str | None = None) -> list[Check]:
    """TLS CA, client certificate and key, MQTT password file: readable, certificates valid.
    ``skip_unreadable``: SKIP a file the caller may not read, saying this (not the service)."""
    up = cfg.uplink
    if up is None:
        return []
    out: list[Check] = []

    def skipped(name: str, path: Path | None) -> bool:
        if skip_unreadable is None or path is None or not path.exists():
            return False
        if os.access(path, os.R_OK):
            return False
        out.append(Check(name, SKIP, f"{path} is not readable by you: {skip_unreadable}"))
        return True

    if up.tls is not None:
        if not skipped("tls ca", up.tls.ca_file):
            out.append(check_cert("tls ca", up.tls.ca_file, leaf=False))
        if up.tls.cert_file is not None and not skipped("tls client cert", up.tls.cert_file):
            out.append(check_cert("tls client cert", up.tls.cert_file, leaf=True))
        if up.tls.cert_file is not None and not skipped("tls client key", up.tls.key_file):
            try:
                ctx = ssl.create_default_context(cafile=str(up.tls.ca_file))
                ctx.load_cert_chain(str(up.tls.cert_file),
                                    str(up.tls.key_file) if up.tls.key_file else None)
                out.append(Check("tls client key", PASS, "certificate and key load together"))
            except (OSError, ssl.SSLError) as exc:
                out.append(Check("tls client key", FAIL, f"cannot load the client certificate "
                                 f"with its key: {exc}", "readable by the service? the key "
                                 "that belongs to the certificate?"))
    if up.password_file is not None and not skipped("mqtt password", up.password_file):
        try:
            up.password_file.read_bytes()
            out.append(Check("mqtt password", PASS, f"{up.password_file} readable"))
        except OSError as exc:
            out.append(Check("mqtt password", FAIL, f"cannot read: {_why(exc)}"))
    return out


def service_checks(config: Path) -> list[dict[str, Any]]:
    """Everything that depends on the identity, as the identity running this (JSON-able)."""
    checks, cfg = load(config)
    if cfg is not None:
        checks.append(check_key(cfg))
        dirs = dict.fromkeys([cfg.state_dir, cfg.outbox.path.parent])
        checks += [check_writable("state dir", d) for d in dirs]
        checks += [check_serial(b) for b in cfg.buses.values() if isinstance(b, SerialBus)]
        checks += check_tls_files(cfg)
    return [c.as_dict() for c in checks]


def caller_checks(config: Path, ident: Identity | None,
                  why_not: str) -> tuple[list[Check], AgentConfig | None]:
    """What someone without the service's identity can tell; SKIP (``why_not`` says how to get
    the full check) where only the service's rights could."""
    try:
        os.stat(config)
        readable = os.access(config, os.R_OK)
    except PermissionError:  # a directory on the way that is not yours to search
        readable = False
    except OSError:
        readable = True  # missing: load() FAILs naming it, whoever asks
    if not readable:
        return [Check("config", SKIP, f"{config} is not readable by you: "
                      f"{way_in(config, why_not)}"),
                Check("needs the config", SKIP, "signing key, state dir, serial ports, TLS "
                      "files, disk, Modbus TCP endpoints, broker, the unit's writable paths: "
                      "they come from the config")], None
    checks, cfg = load(config)
    if cfg is None:
        return checks, None
    checks.append(bounded("signing key", cfg.keys.signing_key,
                          lambda: _key_as_caller(cfg, why_not)))
    checks.append(bounded("state dir", cfg.state_dir,
                          lambda: _dir_by_modes(cfg.state_dir, ident, why_not)))
    checks += [_serial_by_modes(b, ident) for b in cfg.buses.values() if isinstance(b, SerialBus)]
    checks += check_tls_files(cfg, skip_unreadable=why_not)
    return checks, cfg


def way_in(path: Path, why_not: str) -> str:
    """How the caller gets to read ``path``: the group to join when the group's bits would let
    its members in (the directory on the way, else the file), and ``why_not`` in any case."""
    blocker, bit = path, 0o040
    for p in reversed(path.parents):  # from / down: the first directory not searchable
        if not os.access(p, os.X_OK):
            blocker, bit = p, 0o010
            break
    try:
        st = os.stat(blocker)
    except OSError:
        return why_not
    if st.st_mode & bit and st.st_gid not in {os.getegid(), *os.getgroups()}:
        try:
            name = grp.getgrgid(st.st_gid).gr_name
        except KeyError:
            name = str(st.st_gid)
        return (f"join group {name} (`sudo adduser $USER {name}`, then log in again), or "
                f"{why_not}")
    return why_not


def _key_as_caller(cfg: AgentConfig, why_not: str) -> Check:
    path = cfg.keys.signing_key
    try:
        os.stat(path)
    except PermissionError:
        return Check("signing key", SKIP, f"{path} is not visible to you (as it should be: only "
                     f"the service reads it): {why_not}")
    except FileNotFoundError:
        return Check("signing key", FAIL, f"{path} does not exist", "run `edge-agent provision`")
    if not os.access(path, os.R_OK):
        return Check("signing key", SKIP, f"{path} is not readable by you (as it should be): "
                     f"{why_not}")
    return _check_key(cfg)  # readable by a technician: the permission rules decide


def _dir_by_modes(directory: Path, ident: Identity | None, why_not: str) -> Check:
    if ident is None:
        return Check("state dir", SKIP, f"no service user to check {directory} for: {why_not}")
    ok = may_access(directory, ident, os.W_OK | os.X_OK)
    if ok is None:
        return Check("state dir", SKIP, f"{directory}: cannot see its permissions: {why_not}")
    if not ok:
        return Check("state dir", FAIL, f"{directory} is not writable by {ident.name} "
                     "(by its mode bits)", f"chown {ident.name}: {directory}; chmod 700 "
                     f"{directory}")
    return Check("state dir", PASS, f"{directory} writable by {ident.name} (by its mode bits)")


def _serial_by_modes(bus: SerialBus, ident: Identity | None) -> Check:
    name, p = f"serial {bus.name}", Path(bus.port)
    if not p.exists():
        return check_serial(bus)  # FAIL: missing, whoever asks
    if ident is None:
        return Check(name, SKIP, f"{p} exists; no service user to check its permissions for")
    ok = may_access(p, ident, os.R_OK | os.W_OK)
    if ok is None:
        return Check(name, SKIP, f"{p} exists; cannot see its permissions")
    if not ok:
        return Check(name, FAIL, f"{p} is not readable and writable by {ident.describe()} "
                     "(by its mode bits)",
                     f"`ls -l {p}`: its group should be one of the service's (dialout)")
    return Check(name, PASS, f"{p} readable and writable by {ident.name} (by its mode bits)")
