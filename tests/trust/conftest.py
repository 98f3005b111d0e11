from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.trust.batch import BatchSigner
from tests.support_broker import MOSQUITTO, Mosquitto
from tests.trust.helpers import BOOT, GATEWAY, fixed_key


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return fixed_key(0)


@pytest.fixture
def other_key() -> Ed25519PrivateKey:
    return fixed_key(1)


@pytest.fixture
def signer(key: Ed25519PrivateKey) -> BatchSigner:
    return BatchSigner(key, GATEWAY, BOOT)


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[int]:
    """A real mosquitto (plain listener on a free loopback port); killed and reaped at teardown."""
    if not Path(MOSQUITTO).exists():
        pytest.skip("mosquitto not installed (apt-get install mosquitto)")
    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    try:
        yield broker.port
    finally:
        broker.stop()
