from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.config.model import UplinkConfig
from edge_agent.outbox.store import Outbox
from edge_agent.outbox.writer import make_gap_signer
from edge_agent.retry import RetryPolicy
from edge_agent.trust.batch import BatchSigner
from edge_agent.uplink.mqtt import MqttUplink
from tests.outbox.chains import GATEWAY
from tests.support_broker import MOSQUITTO, Mosquitto, Subscriber
from tests.uplink.proxy import Proxy

FAST_RETRY = RetryPolicy(initial_s=0.05, max_s=0.3)


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))


@pytest.fixture
def signer(key: Ed25519PrivateKey) -> BatchSigner:
    return BatchSigner(key, GATEWAY, "boot-uplink")


@pytest.fixture
def outbox(tmp_path: Path, signer: BatchSigner) -> Iterator[Outbox]:
    box = Outbox(tmp_path / "outbox.db", cap_bytes=1 << 26, gap_signer=make_gap_signer(signer))
    yield box
    box.close()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    if not Path(MOSQUITTO).exists():
        pytest.skip("mosquitto not installed (apt-get install mosquitto)")
    b = Mosquitto(tmp_path / "broker")
    b.start()
    yield b
    b.stop()


@pytest.fixture
def proxy(broker: Mosquitto) -> Iterator[Proxy]:
    p = Proxy(broker.port)
    yield p
    p.close()


MakeSub = Callable[..., Subscriber]


@pytest.fixture
def subscribe() -> Iterator[MakeSub]:
    made: list[Subscriber] = []

    def make(port: int, topic: str = "edge/+/data", **kw: Any) -> Subscriber:
        made.append(Subscriber(port, topic, **kw))
        return made[-1]

    yield make
    for s in made:
        s.close()


MakeUplink = Callable[..., MqttUplink]


@pytest.fixture
def make_uplink(outbox: Outbox) -> Iterator[MakeUplink]:
    made: list[MqttUplink] = []

    def make(port: int, *, box: Outbox | None = None, start: bool = True, **kw: Any) -> MqttUplink:
        cfg = dataclasses.replace(
            UplinkConfig(host="127.0.0.1", port=port, inflight=8, keepalive_s=5), **kw
        )
        up = MqttUplink(cfg, GATEWAY, box or outbox, boot_id="boot-uplink", retry=FAST_RETRY)
        made.append(up)
        if start:
            up.start()
        return up

    yield make
    for up in made:
        up.stop()
