"""SerialRtuBus polling the RS-485 line simulator (simulators.transports.rtu_line), which keeps
real wire timing and records every t3.5 violation."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import pytest

from edge_agent.bus.serial_line import SerialRtuBus
from edge_agent.config.model import SerialBus
from edge_agent.errors import BusTimeout, FrameError, ModbusException
from edge_agent.profiles.model import Table
from simulators.faults import DeviceFault, FaultState
from simulators.transports.rtu_line import RtuLine

T = TypeVar("T")


@dataclass
class RegDevice:
    """A plain register image (the line's RtuDevice protocol); value of holding i = base + i."""

    name: str
    unit_id: int
    base: int = 0
    faults: FaultState = field(default_factory=FaultState)
    regs: list[int] = field(default_factory=list)
    bits: list[int] = field(default_factory=lambda: [0] * 64)

    def __post_init__(self) -> None:
        self.regs = [(self.base + i) & 0xFFFF for i in range(200)]

    def read(self, table: Table, address: int, count: int) -> list[int]:
        src = self.bits if table.is_bits else self.regs
        if address + count > len(src):
            raise ModbusException(ModbusException.ILLEGAL_DATA_ADDRESS)
        return src[address : address + count]

    def write(self, table: Table, address: int, values: Sequence[int]) -> None:
        dst = self.bits if table is Table.COIL else self.regs
        dst[address : address + len(values)] = list(values)


@pytest.fixture
def devices() -> list[RegDevice]:
    return [RegDevice(f"dev{u}", u, base=u * 1000) for u in (1, 2, 3)]


@pytest.fixture
def line(devices: list[RegDevice], request: pytest.FixtureRequest) -> Iterator[RtuLine]:
    baud = getattr(request, "param", 38400)
    ln = RtuLine(devices, baud=baud, turnaround_s=0.003)
    ln.start()
    yield ln
    ln.stop()


def run(line: RtuLine, body: Callable[[SerialRtuBus], Awaitable[T]], **kw: float) -> T:
    cfg = SerialBus(
        name="rs485-sim", port=line.path, baud=line.timing.baud, turnaround_ms=5,
        timeout_max_s=kw.get("timeout_max_s", 0.3),
        late_answer_window_s=kw.get("late_answer_window_s", 2.0),
    )

    async def main() -> T:
        bus = SerialRtuBus(cfg)
        try:
            return await body(bus)
        finally:
            await bus.close()

    return asyncio.run(main())


@pytest.mark.timeout(40)
@pytest.mark.parametrize("line", [9600, 38400], indirect=True)
def test_many_mixed_requests_without_a_single_t35_violation(
    line: RtuLine, devices: list[RegDevice]
) -> None:
    n = 12 if line.timing.baud == 9600 else 40

    async def poll(bus: SerialRtuBus, dev: RegDevice) -> int:
        good = 0
        for i in range(n):
            vals = await bus.read(dev.unit_id, Table.HOLDING, i, 8, timeout_s=0.5)
            good += vals == [(dev.base + i + k) & 0xFFFF for k in range(8)]
            if i % 10 == 5:
                await bus.write(dev.unit_id, Table.COIL, i, [1, 0, 1], timeout_s=0.5)
        return good

    async def body(bus: SerialRtuBus) -> list[int]:
        got = list(await asyncio.gather(*(poll(bus, d) for d in devices)))
        await bus.write(0, Table.HOLDING, 150, [4242], timeout_s=0.5)  # broadcast, then on
        got.append(len(await bus.read(2, Table.INPUT, 0, 4, timeout_s=0.5)))
        return got

    assert run(line, body) == [n, n, n, 4]
    assert line.violations == []
    assert all(d.regs[150] == 4242 for d in devices)
    assert devices[0].bits[5:8] == [1, 0, 1]
    assert line.stats.requests == 3 * n + 3 * len(range(5, n, 10)) + 2


@pytest.mark.timeout(20)
def test_late_answer_after_timeout_is_not_taken_for_the_next(
    line: RtuLine, devices: list[RegDevice]
) -> None:
    dev = devices[0]
    dev.faults.kind, dev.faults.slow_s = DeviceFault.SLOW, 0.25

    async def body(bus: SerialRtuBus) -> list[int]:
        with pytest.raises(BusTimeout):
            await bus.read(1, Table.HOLDING, 0, 2, timeout_s=0.1)  # answer comes at ~0.25 s
        dev.faults.clear()
        dev.regs[0:2] = [7, 7]
        t0 = time.monotonic()
        vals = await bus.read(1, Table.HOLDING, 0, 2, timeout_s=0.5)
        assert time.monotonic() - t0 < 1.0  # the guard (0.3 s) and a little
        return vals

    assert run(line, body, timeout_max_s=0.3) == [7, 7]  # not the late [1000, 1001]
    assert line.violations == []
    assert line.stats.per_unit[1].responses == 2


@pytest.mark.timeout(20)
def test_a_late_answer_holds_the_line_and_the_neighbour_loses_nothing(
    line: RtuLine, devices: list[RegDevice]
) -> None:
    slow = devices[0]
    slow.faults.kind, slow.faults.slow_s = DeviceFault.SLOW, 0.5  # 5x the timeout

    async def body(bus: SerialRtuBus) -> dict[int, int]:
        for _ in range(3):
            t0 = time.monotonic()
            with pytest.raises(BusTimeout):
                await bus.read(1, Table.HOLDING, 0, 2, timeout_s=0.1)
            held = time.monotonic() - t0
            assert 0.5 <= held < 1.0  # until its answer came, not the whole 1.5 s window
            t0 = time.monotonic()
            assert await bus.read(2, Table.HOLDING, 0, 2, timeout_s=0.2) == [2000, 2001]
            assert time.monotonic() - t0 < 0.15
        assert 0.5 <= bus.late.last_late_s[1] < 1.0
        return bus.late.count

    assert run(line, body, late_answer_window_s=1.5) == {1: 3}  # attributed to unit 1 only
    assert line.violations == []
    assert line.stats.per_unit[1].responses == 3  # every late answer went out on the wire
    assert line.stats.per_unit[2].responses == 3


@pytest.mark.timeout(20)
def test_without_the_hold_the_late_answer_hurts_the_neighbour(
    line: RtuLine, devices: list[RegDevice]
) -> None:
    """The contrast to the test above (late_answer_window = 0: the behaviour before the hold)."""
    slow = devices[0]
    slow.faults.kind, slow.faults.slow_s = DeviceFault.SLOW, 0.5

    async def body(bus: SerialRtuBus) -> int:
        with pytest.raises(BusTimeout):
            await bus.read(1, Table.HOLDING, 0, 2, timeout_s=0.1)
        failed = 0
        try:
            await bus.read(2, Table.HOLDING, 0, 2, timeout_s=0.2)
        except (BusTimeout, FrameError):
            failed += 1
        return failed

    assert run(line, body, late_answer_window_s=0.0) == 1


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (DeviceFault.BAD_CRC, FrameError),
        (DeviceFault.TRUNCATED, FrameError),
        (DeviceFault.DEAD, BusTimeout),
        (DeviceFault.EXCEPTION, ModbusException),
    ],
)
def test_faulty_unit_fails_cleanly_and_the_line_goes_on(
    line: RtuLine, devices: list[RegDevice], fault: DeviceFault, error: type[Exception]
) -> None:
    devices[1].faults.kind = fault

    async def body(bus: SerialRtuBus) -> list[list[int]]:
        out = [await bus.read(1, Table.HOLDING, 3, 2, timeout_s=0.3)]
        with pytest.raises(error):
            await bus.read(2, Table.HOLDING, 3, 2, timeout_s=0.15)
        out.append(await bus.read(3, Table.HOLDING, 3, 2, timeout_s=0.3))
        devices[1].faults.clear()
        out.append(await bus.read(2, Table.HOLDING, 3, 2, timeout_s=0.3))
        return out

    assert run(line, body) == [[1003, 1004], [3003, 3004], [2003, 2004]]
    assert line.violations == []


@pytest.mark.timeout(20)
def test_garbage_before_the_answer_is_skipped(line: RtuLine, devices: list[RegDevice]) -> None:
    devices[2].faults.kind = DeviceFault.GARBAGE

    async def body(bus: SerialRtuBus) -> list[int]:
        return await bus.read(3, Table.HOLDING, 10, 3, timeout_s=0.3)

    assert run(line, body) == [3010, 3011, 3012]
    assert line.violations == []
