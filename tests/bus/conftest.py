"""Fixtures for the bus owners' tests: a pty RTU slave that is always stopped."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.bus.pty_slave import PtySlave, Unit

SlaveFactory = Callable[..., PtySlave]


@pytest.fixture
def pty_slave() -> Iterator[SlaveFactory]:
    started: list[PtySlave] = []

    def make(
        units: dict[int, Unit] | None = None, *, baud: int = 115200, turnaround_s: float = 0.0
    ) -> PtySlave:
        slave = PtySlave(
            units if units is not None else {1: Unit()}, baud=baud, turnaround_s=turnaround_s
        )
        slave.start()
        started.append(slave)
        return slave

    yield make
    for s in started:
        s.stop()
