"""AgentConfig: the in-memory form of agent.toml. Paths are absolute (resolved against the file)."""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from edge_agent.errors import Problem
from edge_agent.profiles.model import Profile

LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    """True for a name or address that never leaves this machine (no DNS lookup is made: a
    name other than ``localhost`` counts as remote)."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class BusKind(enum.StrEnum):
    TCP = "tcp"  # Modbus TCP endpoint
    RTU = "rtu"  # Modbus RTU on a serial (RS-485) line
    AT = "at"  # AT-command module on a serial line


@dataclass(frozen=True, slots=True)
class TcpBus:
    name: str
    host: str
    port: int = 502
    concurrency: int = 2  # transactions in flight on this endpoint
    timeout_max_s: float = 2.0
    kind: BusKind = BusKind.TCP


@dataclass(frozen=True, slots=True)
class SerialBus:
    name: str
    port: str  # /dev/ttyUSB0, or a pty path
    baud: int = 9600
    parity: str = "N"  # N, E, O
    stopbits: int = 1
    bytesize: int = 8
    turnaround_ms: float = 5.0  # extra gap after a broadcast / before the next request
    timeout_max_s: float = 1.0
    kind: BusKind = BusKind.RTU  # RTU or AT
    # RTU: how late after its request a unit's answer may still arrive. After a timeout with no
    # byte heard, the line is held until then (or until that late answer came) before anyone else
    # is addressed -- once per unit, until a hold finds it silent (dead). 0: never hold.
    late_answer_window_s: float = 2.0

    @property
    def char_bits(self) -> int:
        return 1 + self.bytesize + (0 if self.parity == "N" else 1) + self.stopbits

    @property
    def char_time_s(self) -> float:
        return self.char_bits / self.baud

    @property
    def silent_interval_s(self) -> float:
        """Modbus RTU t3.5: 3.5 character times, fixed at 1.75 ms above 19200 baud."""
        return 3.5 * self.char_time_s if self.baud <= 19200 else 0.00175


Bus = TcpBus | SerialBus


# a device without tags (most of them): one shared, read-only empty mapping, not an empty dict
# each (a thousand devices: 62 KiB)
NO_TAGS: Mapping[str, str] = MappingProxyType({})


def no_tags() -> Mapping[str, str]:
    return NO_TAGS


@dataclass(frozen=True, slots=True)
class DeviceConfig:
    name: str
    profile: str
    bus: str
    unit_id: int = 1
    tags: Mapping[str, str] = field(default_factory=no_tags)
    max_gap: int | None = None  # overrides the profile's max_gap (0 = never read unmapped)
    interval_s: float | None = None  # overrides every point's interval


@dataclass(frozen=True, slots=True)
class TlsConfig:
    ca_file: Path
    cert_file: Path | None = None  # client certificate for mutual TLS
    key_file: Path | None = None


@dataclass(frozen=True, slots=True)
class UplinkConfig:
    host: str
    port: int = 8883
    tls: TlsConfig | None = None
    username: str | None = None
    password_file: Path | None = None
    protocol: str = "3.1.1"  # or "5"
    topic_prefix: str = "edge"
    client_id: str | None = None
    keepalive_s: int = 30
    inflight: int = 32
    status_interval_s: float = 60.0
    insecure_plaintext: bool = False  # [uplink] insecure_plaintext: plaintext to a remote host

    @property
    def plaintext_remote(self) -> bool:
        """MQTT without TLS to a host that is not this machine (needs ``insecure_plaintext``)."""
        return self.tls is None and not is_loopback(self.host)


@dataclass(frozen=True, slots=True)
class BatchConfig:
    # 1000 (Telegraf's metric_batch_size default): at low rates max_ms closes the batch, at high
    # rates fewer, larger batches cut the per-batch commit, fsync, publish and ack (issue #15)
    max_readings: int = 1000
    max_ms: int = 1000


@dataclass(frozen=True, slots=True)
class OutboxConfig:
    path: Path
    cap_bytes: int = 256 * 1024 * 1024  # the whole footprint on disk (database, WAL, reserve)
    reserve_bytes: int | None = None  # kept free for drops and acks; None: cap/16, 64 KiB..4 MiB


@dataclass(frozen=True, slots=True)
class KeysConfig:
    signing_key: Path
    command_keys: Path | None = None  # directory of operator public keys (allowlist)
    # directory of the configuration operators' public keys: the only signers of configuration
    # bundles (edge_agent.rollout); a command key cannot change configuration
    config_keys: Path | None = None


@dataclass(frozen=True, slots=True)
class AgentConfig:
    source: Path
    gateway_id: str
    buses: dict[str, Bus]
    devices: tuple[DeviceConfig, ...]
    profiles: dict[str, Profile]
    uplink: UplinkConfig | None
    batch: BatchConfig
    outbox: OutboxConfig
    keys: KeysConfig
    state_dir: Path
    runtime_dir: Path
    commands_allow_unsynced_clock: bool = False  # [commands] allow_unsynced_clock
    prometheus_textfile: Path | None = None  # [health] prometheus_textfile (node_exporter)
    # [rollout] tags: this box's tags, matched by a configuration bundle's tag selector (local)
    rollout_tags: dict[str, str] = field(default_factory=dict)
    # accepted but unsafe settings (insecure_plaintext...): check-config prints them, the daemon
    # logs them at start; not part of what a reload compares
    warnings: tuple[Problem, ...] = field(default=(), compare=False)
