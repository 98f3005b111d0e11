from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from simulators.scenario import BackgroundScenario
from tests.support_broker import Mosquitto

from .fleet import Fleet, start_fleet, stop_fleet

HERE = Path(__file__).resolve().parent
TAGS = {"gw-a": {"district": "harbour", "wave": "canary"},
        "gw-b": {"district": "harbour"}, "gw-c": {"district": "harbour"},
        "gw-x": {"district": "north"}}


def _fleet(tmp_path: Path, ids: list[str], acl: str | None = None) -> Iterator[Fleet]:
    broker = Mosquitto(tmp_path / "broker", acl=acl)
    broker.start()
    bg = BackgroundScenario.load(str(HERE / "fleet.toml"))
    fleet: Fleet | None = None
    try:
        sim = bg.start()
        fleet = start_fleet(tmp_path / "fleet", sim, broker, ids, TAGS)
        yield fleet
    finally:
        if fleet is not None:
            stop_fleet(fleet.gateways)
        bg.stop()
        broker.stop()


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    """Three gateways tagged district=harbour (gw-a also wave=canary), one in district=north."""
    yield from _fleet(tmp_path, ["gw-a", "gw-b", "gw-c", "gw-x"])


@pytest.fixture
def single(tmp_path: Path) -> Iterator[Fleet]:
    yield from _fleet(tmp_path, ["gw-a"])


@pytest.fixture
def harbour(tmp_path: Path) -> Iterator[Fleet]:
    """Three gateways tagged district=harbour, gw-a also wave=canary."""
    yield from _fleet(tmp_path, ["gw-a", "gw-b", "gw-c"])


@pytest.fixture
def acl_single(tmp_path: Path) -> Iterator[Fleet]:
    """One gateway on a broker whose ACL lets anyone use edge/# and metro/# -- nothing else."""
    yield from _fleet(tmp_path, ["gw-a"], acl="topic readwrite edge/#\ntopic readwrite metro/#\n")
