"""An in-memory ``AgentConfig`` for simulated devices, for code that drives the poller or the
pipeline in-process (tests, benchmarks) without writing an agent.toml. Lab code."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from edge_agent.config.model import (
    AgentConfig,
    BatchConfig,
    Bus,
    DeviceConfig,
    KeysConfig,
    OutboxConfig,
)
from edge_agent.profiles.load import load_profile
from edge_agent.profiles.model import Profile
from edge_agent.profiles.shipped import shipped_dir


def shipped_profile(name: str) -> Profile:
    """A profile shipped with the agent, by name (e.g. ``"water_meter"``)."""
    return load_profile(shipped_dir() / f"{name}.toml")


def make_config(
    buses: Sequence[Bus], devices: Sequence[DeviceConfig], profiles: Sequence[Profile]
) -> AgentConfig:
    tmp = Path("/nonexistent/edge-agent-test")
    return AgentConfig(
        source=tmp / "agent.toml",
        gateway_id="gw-test",
        buses={b.name: b for b in buses},
        devices=tuple(devices),
        profiles={p.name: p for p in profiles},
        uplink=None,
        batch=BatchConfig(),
        outbox=OutboxConfig(tmp / "outbox.db"),
        keys=KeysConfig(tmp / "key"),
        state_dir=tmp,
        runtime_dir=tmp,
    )
