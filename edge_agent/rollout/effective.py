"""The configuration a gateway runs: its local agent.toml, or a bundle merged with the box's
local settings.

A bundle carries the managed part of agent.toml (buses, devices, uplink, batch, outbox cap,
commands, health) and its profiles; what belongs to the box stays in the local file and is never
taken from a bundle (``LOCAL_KEYS``: gateway id, state and runtime directories, keys, tags,
profiles_dir, the outbox path). The merged document is checked by the same loader as any config
(``load_config``), so a bundle is refused for exactly what ``check-config`` refuses.

A materialised bundle is a directory: ``agent.toml`` (the bundle's text), ``profiles/NAME.toml``
and ``bundle.cose`` (the signed original). Relative paths in the bundle's agent.toml resolve
against that directory, where nothing but those files exists: files a bundle names (TLS, password)
must be given as absolute paths on the gateway.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from edge_agent.config.load import load_config
from edge_agent.config.model import AgentConfig
from edge_agent.errors import ConfigError, Problem
from edge_agent.profiles.fields import Problems, read_toml
from edge_agent.profiles.load import collect_profiles
from edge_agent.rollout.bundle import LOCAL_KEYS

CONFIG_FILE = "agent.toml"
PROFILES_DIR = "profiles"
# values under these local keys are paths: made absolute against the local file before merging
_LOCAL_PATHS = {("state_dir",), ("runtime_dir",), ("keys", "signing_key"),
                ("keys", "command_keys"), ("keys", "config_keys"), ("outbox", "path")}


def local_key_problems(data: dict[str, Any], file: str) -> list[Problem]:
    """A problem for every local-only key a bundle's agent.toml sets."""
    out = []
    for key in LOCAL_KEYS:
        head, _, tail = key.partition(".")
        section = data.get(head)
        present = (isinstance(section, dict) and tail in section) if tail else head in data
        if present:
            out.append(Problem(file, key, "set on the gateway only (its local agent.toml); a "
                               "configuration bundle cannot change it",
                               "remove it from the bundle"))
    return out


def _absolute(value: Any, base: Path) -> Any:
    if isinstance(value, str) and value and not os.path.isabs(value):
        return str(base / value)
    return value


def merge(local_path: Path, local: dict[str, Any], bundle: dict[str, Any]) -> dict[str, Any]:
    """The bundle's document with the local-only settings of ``local`` (paths made absolute)."""
    base = local_path.absolute().parent
    merged = dict(bundle)
    for key in LOCAL_KEYS:
        head, _, tail = key.partition(".")
        if head not in local or key == "profiles_dir":  # the bundle carries its profiles
            continue
        if tail:
            section = local[head]
            if isinstance(section, dict) and tail in section:
                target = dict(merged.get(head) or {}) if isinstance(merged.get(head), dict) else {}
                target[tail] = _absolute(section[tail], base) if (head, tail) in _LOCAL_PATHS \
                    else section[tail]
                merged[head] = target
            continue
        value = local[head]
        if isinstance(value, dict):
            value = {k: _absolute(v, base) if (head, k) in _LOCAL_PATHS else v
                     for k, v in value.items()}
        elif (head,) in _LOCAL_PATHS:
            value = _absolute(value, base)
        merged[head] = value
    return merged


def load_bundle_dir(local_path: Path, bundle_dir: Path, *, check_files: bool = True,
                    local: dict[str, Any] | None = None) -> AgentConfig:
    """The config of a materialised bundle on this box; ConfigError with every problem (local-only
    keys in the bundle, its TOML, its profiles, the cross-checks)."""
    sink: list[Problem] = []
    cfg_path = bundle_dir / CONFIG_FILE
    data = read_toml(cfg_path, Problems(str(cfg_path), sink))
    if local is None:
        local = read_toml(local_path, Problems(str(local_path), sink))
    if data is None or local is None:
        raise ConfigError(sink)
    sink += local_key_problems(data, str(cfg_path))
    profiles, _ = collect_profiles(bundle_dir / PROFILES_DIR, sink)
    if sink:
        raise ConfigError(sink)
    return load_config(cfg_path, profiles=profiles, data=merge(local_path, local, data),
                       check_files=check_files)


def write_tree(directory: Path, config: str, profiles: dict[str, str],
               signed: bytes | None = None) -> None:
    """``directory``/agent.toml, profiles/NAME.toml (and bundle.cose); files only, no fsync
    (``rollout.store`` makes a staged tree durable)."""
    (directory / PROFILES_DIR).mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_FILE).write_text(config, encoding="utf-8")
    for name, text in profiles.items():
        (directory / PROFILES_DIR / f"{name}.toml").write_text(text, encoding="utf-8")
    if signed is not None:
        (directory / "bundle.cose").write_bytes(signed)


PLACEHOLDER_GATEWAY = "bundle-check"


def check_offline(config: str, profiles: dict[str, str], *, config_name: str = CONFIG_FILE,
                  profiles_dir: str = PROFILES_DIR) -> AgentConfig:
    """What ``config sign`` checks away from any gateway: the bundle as a gateway would load it,
    with a placeholder identity and without the files it names (they are on the gateways).
    Problems name ``config_name`` and ``profiles_dir``, not the staging copy."""
    import tempfile  # imported here: a CLI path; in the daemon it would cost ~1 MiB (shutil...)

    with tempfile.TemporaryDirectory(prefix="edge-agent-bundle-") as tmp:
        root = Path(tmp)
        write_tree(root / "bundle", config, profiles)
        local = {"gateway_id": PLACEHOLDER_GATEWAY, "state_dir": str(root / "state"),
                 "runtime_dir": str(root / "run"),
                 "keys": {"signing_key": str(root / "none.key")}}
        try:
            return load_bundle_dir(root / "local.toml", root / "bundle", check_files=False,
                                   local=local)
        except ConfigError as exc:
            staged = {str(root / "bundle" / CONFIG_FILE): config_name}
            prof = str(root / "bundle" / PROFILES_DIR)
            raise ConfigError([
                Problem(staged.get(p.file) or p.file.replace(prof, profiles_dir, 1), p.path,
                        p.message, p.hint) for p in exc.problems]) from None


def referenced_profiles(config: str, profiles_dir: Path, source: str) -> dict[str, str]:
    """{name: TOML text} of every profile the config's devices name, read from ``profiles_dir``;
    ConfigError naming the device whose profile is missing."""
    try:
        data = tomllib.loads(config)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([Problem(source, "", f"not valid TOML: {exc}")]) from None
    out: dict[str, str] = {}
    problems: list[Problem] = []
    devices = data.get("devices")
    for i, dev in enumerate(devices if isinstance(devices, list) else []):
        name = dev.get("profile") if isinstance(dev, dict) else None
        if not isinstance(name, str) or name in out:
            continue  # the loader reports a missing or mistyped profile key
        path = profiles_dir / f"{name}.toml"
        try:
            out[name] = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(Problem(source, f"devices[{i}].profile",
                                    f"profile {name!r}: cannot read {path}: {exc}"))
    if problems:
        raise ConfigError(problems)
    return out
