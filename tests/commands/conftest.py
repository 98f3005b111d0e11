from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.commands.replay import ReplayGuard
from edge_agent.commands.verify import CommandVerifier
from edge_agent.config.model import (
    AgentConfig,
    BatchConfig,
    DeviceConfig,
    KeysConfig,
    OutboxConfig,
    TcpBus,
)
from edge_agent.profiles.load import load_profile
from edge_agent.trust.keys import kid_of

ROOT = Path(__file__).resolve().parents[2]
NOW = 1_800_000_000


@pytest.fixture
def config(tmp_path: Path) -> AgentConfig:
    lamp = load_profile(ROOT / "device_profiles" / "street_lamp.toml")
    return AgentConfig(
        source=tmp_path / "agent.toml", gateway_id="gw-test",
        buses={"poles": TcpBus("poles", "127.0.0.1", 1502)},
        devices=(DeviceConfig("lamp-01", lamp.name, "poles", 1),),
        profiles={lamp.name: lamp}, uplink=None, batch=BatchConfig(),
        outbox=OutboxConfig(tmp_path / "outbox.db"),
        keys=KeysConfig(tmp_path / "gw.key"), state_dir=tmp_path, runtime_dir=tmp_path,
    )


@pytest.fixture
def operator() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def guard(tmp_path: Path) -> Iterator[ReplayGuard]:
    g = ReplayGuard(tmp_path / "commands.db")
    yield g
    g.close()


@pytest.fixture
def verifier(operator: Ed25519PrivateKey, guard: ReplayGuard) -> CommandVerifier:
    return CommandVerifier(
        {kid_of(operator.public_key()): operator.public_key()}, "gw-test", guard,
        clock_synced=lambda: True, now=lambda: NOW,
    )
