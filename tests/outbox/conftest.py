from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.outbox.store import Outbox
from edge_agent.outbox.writer import make_gap_signer
from edge_agent.trust.batch import BatchSigner
from edge_agent.trust.keys import generate_signing_key
from tests.outbox.chains import GATEWAY


@pytest.fixture
def key_path(tmp_path: Path) -> Path:
    path = tmp_path / "keys" / "gateway.key"
    path.parent.mkdir()
    generate_signing_key(path)
    return path


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


@pytest.fixture
def signer(key: Ed25519PrivateKey) -> BatchSigner:
    return BatchSigner(key, GATEWAY, "boot-1")


@pytest.fixture
def outbox(tmp_path: Path, signer: BatchSigner) -> Iterator[Outbox]:
    box = Outbox(
        tmp_path / "outbox.db", cap_bytes=64 * 1024 * 1024, gap_signer=make_gap_signer(signer)
    )
    yield box
    box.close()
