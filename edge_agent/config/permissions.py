"""Who may change (or read) the files the agent trusts: the one rule set for file permissions.

Used by ``config.load.load_config`` (so by ``check-config``, by the daemon at start and at every
reload, and by ``doctor``: every file below, the signing key included), by ``trust.keys`` when it
loads a signing key and by ``uplink.tls``.

What a hardened Debian gateway expects (``scripts/install`` + ``edge-agent provision``): root
installs and owns the configuration (``/etc/edge-agent`` is ``root:edge-agent 0750``), the service
runs as the unprivileged ``edge-agent`` user, which owns its state and its signing key (0600).

- Every checked file or directory (the config file, the signing key, operator public keys and
  their directory, the TLS CA / client certificate / client key, the MQTT password file) must be
  owned by root, by the service user ``edge-agent`` or by the user running the command, and must
  not be writable by its group or by others: anyone who can rewrite an operator key can send
  commands, anyone who can rewrite the CA or the config can redirect the uplink.
- A secret (a private key, the password file) must also not be readable by others. Its group may
  read it only when that group is the service group (``root:edge-agent 0640`` is how root hands a
  key to the service without letting it change the key); any other group must have no access.

- Every directory on the way to a checked file, from its parent up to ``/`` (of the path as
  written and of the path with symbolic links resolved), must be owned by root, the service user
  or the user running the command, and must not be writable by its group or by others unless it
  is sticky (``/tmp``): whoever can write a directory can replace any file in it by a rename, so
  a 0640 config in a 0777 directory is as open as a 0666 one. A symbolic link on the way must be
  owned by one of them too. This is OpenSSH's ``StrictModes`` walk (``safe_path``), with the
  sticky-bit exception the kernel's own rename rule makes.
- ``profiles_dir`` (when set: the profiles shipped as package data are as trusted as the code)
  and every ``*.toml`` in it follow the directory and public-file rules: a profile holds the
  write min/max that bound remote commands.

Each refusal names the file, its mode and owner, and the exact ``chmod`` / ``chown`` that fixes it.
"""

from __future__ import annotations

import enum
import grp
import os
import pwd
import stat
from pathlib import Path

from edge_agent.config.model import KeysConfig, UplinkConfig
from edge_agent.profiles.fields import Problems

SERVICE_USER = "edge-agent"  # systemd/edge-agent.sysusers; also the group of that user


class Kind(enum.Enum):
    """What a file is, for the wording of the message and the rule that applies."""

    CONFIG = "config file"
    DIRECTORY = "directory"
    PUBLIC = "public file"  # a certificate, a CA bundle, an operator's public key
    SECRET = "private file"  # a private key, the password file

    @property
    def secret(self) -> bool:
        return self is Kind.SECRET


def _uid(name: str) -> int | None:
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return None


def _gid(name: str) -> int | None:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def allowed_owners() -> set[int]:
    """root, the service user (when the account exists) and the user running this process."""
    owners = {0, os.geteuid()}
    service = _uid(SERVICE_USER)
    if service is not None:
        owners.add(service)
    return owners


def secret_owner() -> str:
    """Who should own a secret: the service user if the account exists, else whoever runs this."""
    return SERVICE_USER if _uid(SERVICE_USER) is not None else _user(os.geteuid())


def file_problem(path: Path, kind: Kind, what: str = "") -> str | None:
    """Why ``path`` may not be trusted as ``kind`` (its own mode and owner, then the directories
    on the way to it; the fix included), or None if it may. A missing file is not this function's
    business (None): callers report existence themselves. ``what`` names the file in the message
    ("operator key", "TLS client key"...)."""
    own = own_problem(path, kind, what)
    if own is not None or not _exists(path):
        return own
    on_the_way = parent_problems(path, what or kind.value, set())
    return on_the_way[0] if on_the_way else None


def _exists(path: Path) -> bool:
    try:
        os.stat(path)
    except OSError:
        return False
    return True


def own_problem(path: Path, kind: Kind, what: str = "") -> str | None:
    """The rules on the file itself (mode, owner, type), not on the directories holding it."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"{what or kind.value} {path}: cannot stat: {exc.strerror or exc}"
    label = f"{what or kind.value} {path}"
    mode = stat.S_IMODE(st.st_mode)
    found = f"mode {mode:04o}, owner {_user(st.st_uid)}:{_group(st.st_gid)}"
    if kind is Kind.DIRECTORY and not stat.S_ISDIR(st.st_mode):
        return f"{label} is not a directory"
    if kind is not Kind.DIRECTORY and not stat.S_ISREG(st.st_mode):
        return f"{label} is not a regular file"
    if st.st_uid not in allowed_owners():
        owner = secret_owner() if kind.secret else "root"
        return (f"{label} is owned by {_user(st.st_uid)}, not by root or the service "
                f"user {SERVICE_USER} ({found}); fix: chown {owner} {path}")
    if kind.secret:
        service_gid = _gid(SERVICE_USER)
        group_may_read = service_gid is not None and st.st_gid == service_gid
        group_bad = stat.S_IRWXG & ~(stat.S_IRGRP if group_may_read else 0)
        who = [w for w, bits in (("group", group_bad), ("others", stat.S_IRWXO)) if mode & bits]
        if who:
            keep = 0o640 if group_may_read and mode & stat.S_IRGRP else 0o600
            return (f"{label} is accessible by {' and '.join(who)} ({found}); "
                    f"fix: chmod {keep:o} {path}")
        return None
    who = [w for w, bit in (("group", stat.S_IWGRP), ("others", stat.S_IWOTH)) if mode & bit]
    if who:
        return f"{label} is writable by {' and '.join(who)} ({found}); fix: chmod go-w {path}"
    return None


def _writable_by(mode: int) -> list[str]:
    return [w for w, bit in (("group", stat.S_IWGRP), ("others", stat.S_IWOTH)) if mode & bit]


def _ancestors(path: Path) -> list[Path]:
    """The directories holding ``path`` up to ``/``, nearest first: of the path as written
    (normalised, absolute) and of the path with every symbolic link resolved."""
    written = Path(os.path.normpath(path.absolute()))
    real = Path(os.path.realpath(written))
    found: list[Path] = []
    for p in (*written.parents, *real.parents):
        if p not in found:
            found.append(p)
    return found


def parent_problems(path: Path, what: str, seen: set[Path]) -> list[str]:
    """Why a directory on the way to ``path`` (or a symbolic link on it) lets someone else replace
    it: owner not root / the service user / the caller, or writable by group or others and not
    sticky. Directories in ``seen`` were judged already (by an earlier file or as a checked
    directory themselves) and are skipped; every directory judged here is added to it."""
    problems: list[str] = []
    owners = allowed_owners()
    written = Path(os.path.normpath(path.absolute()))
    for link in (written, *written.parents):  # a link on the way: its owner could repoint it
        try:
            lst = os.lstat(link)
        except OSError:
            continue
        if stat.S_ISLNK(lst.st_mode) and lst.st_uid not in owners and link not in seen:
            seen.add(link)
            problems.append(f"symbolic link {link} on the way to {what} {path} is owned by "
                            f"{_user(lst.st_uid)}, not by root or the service user "
                            f"{SERVICE_USER}: its owner can point it elsewhere; fix: "
                            f"chown -h root {link}")
    for d in _ancestors(path):
        if d in seen:
            continue
        seen.add(d)
        try:
            st = os.stat(d)
        except OSError as exc:
            problems.append(f"directory {d} holding {what} {path}: cannot stat: "
                            f"{exc.strerror or exc}")
            continue
        mode = stat.S_IMODE(st.st_mode)
        found = f"mode {mode:04o}, owner {_user(st.st_uid)}:{_group(st.st_gid)}"
        if st.st_uid not in owners:
            problems.append(f"directory {d} holding {what} {path} is owned by {_user(st.st_uid)}, "
                            f"not by root or the service user {SERVICE_USER} ({found}): its "
                            f"owner can replace what it holds; fix: chown root {d}")
        elif (who := _writable_by(mode)) and not mode & stat.S_ISVTX:
            problems.append(f"directory {d} holding {what} {path} is writable by "
                            f"{' and '.join(who)} ({found}): they can replace what it holds by "
                            f"a rename (a sticky directory, chmod +t, would stop that); "
                            f"fix: chmod go-w {d}")
    return problems


OPERATOR_KEY_SUFFIXES = (".pem", ".pub")  # what the daemon loads from keys.command_keys
PROFILE_SUFFIX = ".toml"  # what config loading reads from profiles_dir


def check_config_files(source: Path, uplink: UplinkConfig | None, keys: KeysConfig | None,
                       problems: Problems, *, profiles_dir: Path | None = None,
                       warnings: list[str] | None = None) -> None:
    """Add a problem for every file named by the config (and the config itself) that fails the
    rules above, at the key path that names it: the config, its TLS and password files, the
    signing key, the operator key directories and their keys, ``profiles_dir`` and its profiles,
    and every directory on the way to each (each directory judged once, at the first key path
    that reaches it). Files that do not exist are reported by the loader (``must_exist``) or not
    at all (an operators directory that is absent means "no remote commands"; a signing key not
    made yet is reported by whatever loads it). A signing key the caller may not even look at
    (a technician running ``check-config`` outside the service's state directory) is not judged
    but noted in ``warnings``: whoever loads it (the daemon, ``doctor`` as the service) does."""
    checks: list[tuple[str, Path, Kind, str]] = [("", source, Kind.CONFIG, "config file")]
    if uplink is not None:
        if uplink.tls is not None:
            checks.append(("uplink.tls.ca_file", uplink.tls.ca_file, Kind.PUBLIC, "TLS CA file"))
            if uplink.tls.cert_file is not None:
                checks.append(("uplink.tls.cert_file", uplink.tls.cert_file, Kind.PUBLIC,
                               "TLS client certificate"))
            if uplink.tls.key_file is not None:
                checks.append(("uplink.tls.key_file", uplink.tls.key_file, Kind.SECRET,
                               "TLS client key"))
        if uplink.password_file is not None:
            checks.append(("uplink.password_file", uplink.password_file, Kind.SECRET,
                           "MQTT password file"))
    if keys is not None:
        try:
            os.stat(keys.signing_key)
            checks.append(("keys.signing_key", keys.signing_key, Kind.SECRET, "signing key"))
        except PermissionError:
            if warnings is not None:
                warnings.append(f"signing key {keys.signing_key}: not visible to "
                                f"{_user(os.geteuid())}, so its permissions were not checked "
                                "here (the daemon and `doctor` as root check them)")
        except OSError:
            pass  # missing or unreachable: whoever loads it says so
    named: list[tuple[str, Path | None, str, tuple[str, ...]]] = [
        ("keys.command_keys", keys.command_keys if keys else None, "operator key",
         OPERATOR_KEY_SUFFIXES),
        ("keys.config_keys", keys.config_keys if keys else None, "configuration operator key",
         OPERATOR_KEY_SUFFIXES),
        ("profiles_dir", profiles_dir, "profile", (PROFILE_SUFFIX,))]
    for name, directory, what, suffixes in named:
        if directory is None:
            continue
        checks.append((name, directory, Kind.DIRECTORY, f"{what} directory"))
        try:
            listed = sorted(directory.iterdir()) if directory.is_dir() else []
        except OSError as exc:
            problems.add(name, f"{what} directory {directory}: cannot list: {exc.strerror or exc}")
            listed = []
        checks += [(name, f, Kind.PUBLIC, what) for f in listed if f.suffix in suffixes]
    seen: set[Path] = {Path(os.path.normpath(p.absolute())) for _, p, kind, _ in checks
                       if kind is Kind.DIRECTORY}  # judged as themselves, not again as parents
    for key_path, path, kind, what in checks:
        why = own_problem(path, kind, what)
        if why is not None:
            problems.add(key_path, why)
        elif _exists(path):
            for why in parent_problems(path, what, seen):
                problems.add(key_path, why)
