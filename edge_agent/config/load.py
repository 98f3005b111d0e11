"""Load ``agent.toml`` (format in docs/profiles.md, "Gateway config") into an ``AgentConfig``.

``load_config(path)`` parses every section, loads the profiles from ``profiles_dir`` (unless given;
unset: the profiles shipped with the agent, ``edge_agent.profiles.shipped``),
runs the cross-checks of ``config.checks`` and raises one ``ConfigError`` with ALL problems found,
in the config and in the profiles. Unknown keys are errors; nothing is silently repaired. Relative
paths are resolved against the directory of the config file.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_agent.config.checks import BusEntry, DeviceEntry, cross_check
from edge_agent.config.model import (
    NO_TAGS,
    AgentConfig,
    BatchConfig,
    Bus,
    BusKind,
    DeviceConfig,
    KeysConfig,
    OutboxConfig,
    SerialBus,
    TcpBus,
    TlsConfig,
    UplinkConfig,
)
from edge_agent.config.permissions import check_config_files
from edge_agent.errors import ConfigError, Problem
from edge_agent.profiles.fields import Problems, Table, read_toml
from edge_agent.profiles.load import MIN_INTERVAL_S, collect_profiles
from edge_agent.profiles.model import Profile
from edge_agent.profiles.shipped import shipped_dir

ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # safe in MQTT topics and file names
STANDARD_BAUDS = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400)
SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KiB|MiB|GiB|kB|KB|MB|GB)\s*$")
SIZE_UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "kB": 1000, "KB": 1000,
              "MB": 1000**2, "GB": 1000**3}
MIN_OUTBOX_BYTES = 1 << 20

TOP_KEYS = ("gateway_id", "profiles_dir", "state_dir", "runtime_dir", "buses", "devices",
            "uplink", "batch", "outbox", "keys", "commands", "health", "rollout")
TCP_KEYS = ("host", "port", "concurrency", "timeout_max")
SERIAL_KEYS = ("port", "baud", "parity", "stopbits", "bytesize", "turnaround_ms", "timeout_max",
               "late_answer_window")
BUS_KEYS = ("name", "kind", *TCP_KEYS, *SERIAL_KEYS)
DEVICE_KEYS = ("name", "profile", "bus", "unit_id", "tags", "max_gap", "interval")
UPLINK_KEYS = ("host", "port", "protocol", "topic_prefix", "client_id", "keepalive", "inflight",
               "status_interval", "username", "password_file", "tls", "insecure_plaintext")
TLS_KEYS = ("ca_file", "cert_file", "key_file")


def load_config(path: Path, *, profiles: dict[str, Profile] | None = None,
                data: dict[str, Any] | None = None, check_files: bool = True) -> AgentConfig:
    """Parse and check ``path``; ``profiles`` (by name) replaces loading ``profiles_dir``,
    ``data`` (already parsed, e.g. a configuration bundle merged with the box's local settings)
    replaces reading ``path`` (still the file problems name and relative paths start from).
    ``check_files=False`` (an operator checking a bundle away from the gateway): files the config
    names are neither required to exist nor checked for their permissions."""
    sink: list[Problem] = []
    problems = Problems(str(path), sink)
    owned = data is None  # parsed here: its arrays of tables may be consumed as they are read
    if data is None:
        data = read_toml(path, problems)
    if data is None:
        raise ConfigError(sink)
    loader = _Loader(path, problems, check_files=check_files)
    top = Table(data, "", problems)
    gateway_id = loader.ident(top, "gateway_id")
    profiles_dir = loader.path(top, "profiles_dir") if top.has("profiles_dir") else None
    state_dir = loader.path(top, "state_dir", "/var/lib/edge-agent")
    runtime_dir = loader.path(top, "runtime_dir", "/run/edge-agent")
    buses: list[BusEntry] = []
    broken_buses: set[str] = set()  # named but invalid: devices on them are not "unknown bus"
    for t in top.each_table("buses", consume=owned):
        entry = loader.bus(t)
        if entry is not None:
            buses.append(entry)
        elif isinstance(t.data.get("name"), str):
            broken_buses.add(t.data["name"])
    devices = [d for d in map(loader.device, top.each_table("devices", consume=owned))
               if d is not None]
    if not top.data.get("buses"):
        top.error("buses", "at least one [[buses]] entry is needed",
                  "add the line the devices hang on: name, kind (rtu, tcp or at), port or host; "
                  "a provisioned skeleton has one commented out")
    if not top.data.get("devices"):
        top.error("devices", "at least one [[devices]] entry is needed",
                  "add each device: name, profile (edge-agent profile list), bus, unit_id "
                  "(edge-agent scan PORT finds them)")
    uplink_t = top.table("uplink")
    uplink = loader.uplink(uplink_t) if uplink_t is not None else None
    batch = loader.batch(top.table("batch"))
    outbox = loader.outbox(top.table("outbox"), state_dir)
    keys = loader.keys(top.table("keys"))
    allow_unsynced = False
    commands_t = top.table("commands")
    if commands_t is not None:
        allow_unsynced = commands_t.boolean("allow_unsynced_clock")
        commands_t.finish(("allow_unsynced_clock",))
    textfile = None
    health_t = top.table("health")
    if health_t is not None:
        if health_t.has("prometheus_textfile"):
            textfile = loader.path(health_t, "prometheus_textfile")
        health_t.finish(("prometheus_textfile",))
    tags: dict[str, str] = {}
    rollout_t = top.table("rollout")
    if rollout_t is not None:
        tags = loader.tags(rollout_t)
        rollout_t.finish(("tags",))
    top.finish(TOP_KEYS)
    if check_files:
        unseen: list[str] = []
        check_config_files(_abs(path), uplink, keys, problems, warnings=unseen,
                           profiles_dir=profiles_dir if profiles is None else None)
        loader.warnings += [Problem(problems.file, "keys.signing_key", w) for w in unseen]

    broken: set[str] = set()
    if profiles is None:
        try:
            if profiles_dir is None:
                profiles_dir = shipped_dir()
            profiles, broken = collect_profiles(profiles_dir, sink)
        except ConfigError as exc:
            sink.extend(exc.problems)
            profiles = {}
    bus_map = cross_check(buses, devices, profiles, problems, broken_profiles=broken,
                          broken_buses=broken_buses)
    if sink or gateway_id is None or keys is None:
        raise ConfigError(sink)
    return AgentConfig(source=_abs(path), gateway_id=gateway_id, buses=bus_map,
                       devices=tuple(d.config for d in devices), profiles=profiles, uplink=uplink,
                       batch=batch, outbox=outbox, keys=keys, state_dir=state_dir,
                       runtime_dir=runtime_dir, commands_allow_unsynced_clock=allow_unsynced,
                       prometheus_textfile=textfile, rollout_tags=tags,
                       warnings=tuple(loader.warnings))


def parse_size(text: str) -> int | None:
    """``"256MiB"`` → bytes; None if not a size."""
    m = SIZE_RE.match(text)
    return int(float(m.group(1)) * SIZE_UNITS[m.group(2)]) if m else None


def _abs(path: Path) -> Path:
    return Path(os.path.normpath(path.absolute()))


@dataclass
class _Loader:
    source: Path
    problems: Problems
    check_files: bool = True
    warnings: list[Problem] = field(default_factory=list)
    intervals: dict[float, float] = field(default_factory=dict)  # the devices' intervals, shared
    # the keys written in a device's table, one frozenset for the devices that wrote the same
    # (a thousand devices alive at once during the load: ~470 bytes each, issue #15)
    keysets: dict[frozenset[str], frozenset[str]] = field(default_factory=dict)

    def ident(self, t: Table, key: str) -> str | None:
        value = t.string(key, required=True)
        if value is not None and not ID_RE.match(value):
            t.error(key, f"{value!r} is not a valid name (letters, digits, '_', '.', '-'; "
                         "at most 64; no '/', '+', '#' or spaces)")
            return None
        return value

    def path(self, t: Table, key: str, default: str | None = None, *,
             must_exist: bool = False) -> Path:
        value = t.string(key, default, required=default is None)
        p = Path(value or ".")
        if not p.is_absolute():
            p = self.source.parent / p
        p = _abs(p)
        if must_exist and self.check_files and value is not None and not p.is_file():
            t.error(key, f"file does not exist: {p}")
        return p

    def bus(self, t: Table) -> BusEntry | None:
        before = len(self.problems.items)
        name = self.ident(t, "name")
        kind = t.choice("kind", BusKind, required=True)
        bus: Bus | None = None
        if kind is BusKind.TCP:
            # interned: 500 endpoints of one host hold one string (tomllib makes one each)
            host = sys.intern(t.string("host", "", required=True) or "")
            # the name interned too: the devices on it name it with the same string
            bus = TcpBus(name=sys.intern(name or ""), host=host,
                         port=t.integer("port", 502, lo=1, hi=65535) or 502,
                         concurrency=t.integer("concurrency", 2, lo=1, hi=16) or 2,
                         timeout_max_s=t.number("timeout_max", 2.0, lo=0, lo_open=True) or 2.0)
        elif kind is not None:
            bus = self._serial(t, name or "", kind)
        serial = 'only for serial buses (kind = "rtu" or "at")'
        why = {k: serial for k in SERIAL_KEYS} | {k: 'only for kind = "tcp"' for k in TCP_KEYS}
        t.finish(BUS_KEYS, why, unknown_only=kind is None)
        if bus is None or len(self.problems.items) > before:
            return None
        return BusEntry(t.path, bus)

    def _serial(self, t: Table, name: str, kind: BusKind) -> SerialBus:
        baud = t.integer("baud", 9600, lo=1)
        if baud is not None and baud not in STANDARD_BAUDS:
            near = min(STANDARD_BAUDS, key=lambda b: abs(b - baud))
            rates = ", ".join(map(str, STANDARD_BAUDS))
            t.error("baud", f"{baud} is not a standard rate ({rates})", f"did you mean {near}?")
        bytesize = t.integer("bytesize", 8, lo=7, hi=8) or 8
        if kind is BusKind.RTU and bytesize != 8:
            t.error("bytesize", "Modbus RTU uses 8 data bits")
        return SerialBus(name=name, port=t.string("port", "", required=True) or "",
                         baud=baud or 9600, parity=t.one_of("parity", ("N", "E", "O"), "N") or "N",
                         stopbits=t.integer("stopbits", 1, lo=1, hi=2) or 1, bytesize=bytesize,
                         turnaround_ms=t.number("turnaround_ms", 5.0, lo=0, hi=1000) or 0.0,
                         timeout_max_s=t.number("timeout_max", 1.0, lo=0, lo_open=True) or 1.0,
                         late_answer_window_s=t.number("late_answer_window", 2.0, lo=0, hi=60)
                         or 0.0,
                         kind=kind)

    def device(self, t: Table) -> DeviceEntry | None:
        before = len(self.problems.items)
        name = self.ident(t, "name")
        profile = t.string("profile", required=True)
        bus = t.string("bus", required=True)
        unit_id = t.integer("unit_id", 1, lo=0, hi=255)
        tags = self.device_tags(t)
        max_gap = t.integer("max_gap", lo=0, hi=125)
        interval = t.number("interval")
        if interval is not None and interval < MIN_INTERVAL_S:
            t.error("interval", f"interval {interval} s is too short (minimum {MIN_INTERVAL_S} s)")
        elif interval is not None:  # a thousand devices at 60 s: one float, not one each
            interval = self.intervals.setdefault(interval, interval)
        t.finish(DEVICE_KEYS)
        if len(self.problems.items) > before or name is None or profile is None or bus is None:
            return None
        # a thousand devices name a few profiles and share buses: one string each (interned)
        cfg = DeviceConfig(name=name, profile=sys.intern(profile), bus=sys.intern(bus),
                           unit_id=unit_id or 0, tags=tags,
                           max_gap=max_gap, interval_s=interval)
        keys = frozenset(t.data)
        return DeviceEntry(t.path, cfg, self.keysets.setdefault(keys, keys))

    @staticmethod
    def tags(t: Table) -> dict[str, str]:
        tags: dict[str, str] = {}
        tags_t = t.table("tags")
        if tags_t is not None:
            for key in tags_t.data:
                value = tags_t.string(key, nonempty=False)
                if value is not None:
                    tags[key] = value
        return tags

    def device_tags(self, t: Table) -> Mapping[str, str]:
        """A device's tags; none: the one shared empty mapping."""
        return self.tags(t) or NO_TAGS

    def uplink(self, t: Table) -> UplinkConfig | None:
        before = len(self.problems.items)
        tls_t = t.table("tls")
        tls: TlsConfig | None = None
        if tls_t is not None:
            ca = self.path(tls_t, "ca_file", must_exist=True)
            cert = self.path(tls_t, "cert_file", must_exist=True) if tls_t.has("cert_file") \
                else None
            key = self.path(tls_t, "key_file", must_exist=True) if tls_t.has("key_file") else None
            if (cert is None) != (key is None):
                tls_t.error("key_file" if key is None else "cert_file",
                            "mutual TLS needs both cert_file and key_file")
            tls_t.finish(TLS_KEYS)
            tls = TlsConfig(ca_file=ca, cert_file=cert, key_file=key)
        username = t.string("username")
        password_file = self.path(t, "password_file", must_exist=True) \
            if t.has("password_file") else None
        if password_file is not None and username is None:
            t.error("password_file", "password_file given without username")
        prefix = t.string("topic_prefix", "edge") or "edge"
        if any(c in prefix for c in "+#\0 ") or prefix.startswith("/") or prefix.endswith("/"):
            t.error("topic_prefix", f"{prefix!r} is not a valid topic prefix (no wildcards, "
                                    "spaces or leading/trailing '/')")
        client_id = t.string("client_id")
        if client_id is not None and not ID_RE.match(client_id):
            t.error("client_id", f"{client_id!r} is not a valid client id")
        cfg = UplinkConfig(
            host=t.string("host", "", required=True) or "",
            port=t.integer("port", 8883 if tls else 1883, lo=1, hi=65535) or 8883, tls=tls,
            username=username, password_file=password_file,
            protocol=t.one_of("protocol", ("3.1.1", "5"), "3.1.1") or "3.1.1",
            topic_prefix=prefix, client_id=client_id,
            keepalive_s=t.integer("keepalive", 30, lo=5, hi=65535) or 30,
            inflight=t.integer("inflight", 32, lo=1, hi=65535) or 32,
            status_interval_s=t.number("status_interval", 60.0, lo=1) or 60.0,
            insecure_plaintext=t.boolean("insecure_plaintext"))
        self._plaintext(t, cfg)
        t.finish(UPLINK_KEYS)
        return cfg if len(self.problems.items) == before else None

    def _plaintext(self, t: Table, cfg: UplinkConfig) -> None:
        """Secure by default: MQTT to anything but loopback is TLS unless explicitly waived."""
        if not cfg.host:
            return  # reported as missing
        if cfg.tls is not None and cfg.insecure_plaintext:
            t.error("insecure_plaintext", "insecure_plaintext = true contradicts [uplink.tls]; "
                    "remove insecure_plaintext")
        elif cfg.plaintext_remote and not cfg.insecure_plaintext:
            t.error("tls", f"required: MQTT to {cfg.host}:{cfg.port} without TLS would send the "
                    "gateway id, credentials and readings in clear",
                    'add [uplink.tls] with ca_file = "/etc/edge-agent/ca.pem"; only on a '
                    "closed lab network: insecure_plaintext = true in [uplink]")
        elif cfg.plaintext_remote:
            self.warnings.append(Problem(
                self.problems.file, t.at("insecure_plaintext"),
                f"plaintext MQTT to {cfg.host}:{cfg.port}: gateway id, credentials and readings "
                "travel in clear", "configure [uplink.tls] and remove insecure_plaintext"))

    def batch(self, t: Table | None) -> BatchConfig:
        if t is None:
            return BatchConfig()
        d = BatchConfig()
        cfg = BatchConfig(
            max_readings=t.integer("max_readings", d.max_readings, lo=1, hi=100_000)
            or d.max_readings,
            max_ms=t.integer("max_ms", d.max_ms, lo=1, hi=3_600_000) or d.max_ms,
        )
        t.finish(("max_readings", "max_ms"))
        return cfg

    def outbox(self, t: Table | None, state_dir: Path) -> OutboxConfig:
        default = OutboxConfig(path=state_dir / "outbox.sqlite")
        if t is None:
            return default
        path = self.path(t, "path") if t.has("path") else default.path
        cap = t.integer("cap_bytes", lo=MIN_OUTBOX_BYTES)
        text = t.string("cap")
        if text is not None:
            cap = parse_size(text)
            if cap is None:
                t.error("cap", f"{text!r} is not a size like \"256MiB\" or \"2GB\"")
            elif cap < MIN_OUTBOX_BYTES:
                t.error("cap", f"{text} is below the minimum of 1MiB")
            if t.has("cap_bytes"):
                t.error("cap", "give cap or cap_bytes, not both")
        reserve = None
        rtext = t.string("reserve")
        if rtext is not None:
            reserve = parse_size(rtext)
            if reserve is None:
                t.error("reserve", f"{rtext!r} is not a size like \"1MiB\" or \"512KiB\"")
            elif reserve < 64 * 1024 or reserve * 4 > (cap or default.cap_bytes):
                t.error("reserve", f"{rtext} must be at least 64KiB and at most a quarter of cap")
                reserve = None
        t.finish(("path", "cap_bytes", "cap", "reserve"))
        return OutboxConfig(path=path, cap_bytes=cap or default.cap_bytes, reserve_bytes=reserve)

    def keys(self, t: Table | None) -> KeysConfig | None:
        if t is None:
            self.problems.add("keys", "required section [keys] missing (signing_key)")
            return None
        signing = self.path(t, "signing_key")
        commands = self.path(t, "command_keys") if t.has("command_keys") else None
        config_keys = self.path(t, "config_keys") if t.has("config_keys") else None
        t.finish(("signing_key", "command_keys", "config_keys"))
        return KeysConfig(signing_key=signing, command_keys=commands, config_keys=config_keys)
