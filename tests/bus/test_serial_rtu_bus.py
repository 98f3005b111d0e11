"""SerialRtuBus against a real pty with an in-test RTU slave thread."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from edge_agent.bus.serial_line import SerialRtuBus
from edge_agent.config.model import SerialBus
from edge_agent.errors import (
    BusClosed,
    BusTimeout,
    CodecError,
    CrcError,
    FrameError,
    ModbusException,
)
from edge_agent.profiles.model import Table
from tests.bus.conftest import SlaveFactory
from tests.bus.pty_slave import Unit

T = TypeVar("T")


def run_with_bus(cfg: SerialBus, body: Callable[[SerialRtuBus], Awaitable[T]]) -> T:
    async def main() -> T:
        bus = SerialRtuBus(cfg)
        try:
            return await body(bus)
        finally:
            await bus.close()

    return asyncio.run(main())


def cfg_for(
    path: str, *, baud: int = 115200, turnaround_ms: float = 5.0, timeout_max_s: float = 0.3
) -> SerialBus:
    return SerialBus(
        name="rs485-test",
        port=path,
        baud=baud,
        turnaround_ms=turnaround_ms,
        timeout_max_s=timeout_max_s,
    )


@pytest.mark.timeout(20)
def test_reads_every_table(pty_slave: SlaveFactory) -> None:
    unit = Unit()
    unit.regs[10:14] = [1, 0xFFFF, 0x1234, 7]
    unit.bits[3:12] = [1, 0, 1, 1, 0, 0, 0, 1, 1]
    slave = pty_slave({5: unit})

    async def body(bus: SerialRtuBus) -> list[list[int]]:
        return [
            await bus.read(5, Table.HOLDING, 10, 4, timeout_s=0.5),
            await bus.read(5, Table.INPUT, 11, 2, timeout_s=0.5),
            await bus.read(5, Table.COIL, 3, 9, timeout_s=0.5),
            await bus.read(5, Table.DISCRETE, 4, 1, timeout_s=0.5),
        ]

    got = run_with_bus(cfg_for(slave.path), body)
    assert got == [[1, 0xFFFF, 0x1234, 7], [0xFFFF, 0x1234], [1, 0, 1, 1, 0, 0, 0, 1, 1], [0]]
    assert [r[1] for r in slave.requests] == [3, 4, 1, 2]
    assert slave.violations == []


@pytest.mark.timeout(20)
def test_writes_apply_and_echo_is_checked(pty_slave: SlaveFactory) -> None:
    unit = Unit()
    slave = pty_slave({2: unit})

    async def body(bus: SerialRtuBus) -> None:
        await bus.write(2, Table.HOLDING, 7, [0xBEEF], timeout_s=0.5)
        await bus.write(2, Table.HOLDING, 20, [1, 2, 3], timeout_s=0.5)
        await bus.write(2, Table.COIL, 4, [1], timeout_s=0.5)
        await bus.write(2, Table.COIL, 30, [1, 0, 1, 1, 1, 0, 0, 0, 1, 1], timeout_s=0.5)
        with pytest.raises(CodecError):
            await bus.write(2, Table.INPUT, 0, [1], timeout_s=0.5)

    run_with_bus(cfg_for(slave.path), body)
    assert unit.regs[7] == 0xBEEF
    assert unit.regs[20:23] == [1, 2, 3]
    assert unit.bits[4] == 1
    assert unit.bits[30:40] == [1, 0, 1, 1, 1, 0, 0, 0, 1, 1]
    assert [r[1] for r in slave.requests] == [6, 16, 5, 15]


@pytest.mark.timeout(20)
def test_exception_response_raises_its_code(pty_slave: SlaveFactory) -> None:
    unit = Unit(fault="exception", exception_code=6)
    slave = pty_slave({1: unit})

    async def body(bus: SerialRtuBus) -> None:
        with pytest.raises(ModbusException) as info:
            await bus.read(1, Table.HOLDING, 0, 2, timeout_s=0.5)
        assert info.value.code == 6
        unit.fault = "none"
        unit.regs[0] = 99
        assert await bus.read(1, Table.HOLDING, 0, 1, timeout_s=0.5) == [99]

    run_with_bus(cfg_for(slave.path), body)


@pytest.mark.timeout(20)
@pytest.mark.parametrize("fault", ["bad_crc", "truncated", "wrong_unit"])
def test_bad_answers_are_frame_errors_and_the_line_recovers(
    pty_slave: SlaveFactory, fault: str
) -> None:
    unit = Unit(fault=fault)
    unit.regs[0] = 42
    slave = pty_slave({1: unit})

    async def body(bus: SerialRtuBus) -> float:
        t0 = time.monotonic()
        with pytest.raises(FrameError) as caught:
            await bus.read(1, Table.HOLDING, 0, 3, timeout_s=1.0)
        took = time.monotonic() - t0
        # typed, never told apart by message text: only a bad CRC is a CrcError
        assert isinstance(caught.value, CrcError) == (fault == "bad_crc")
        unit.fault = "none"
        assert await bus.read(1, Table.HOLDING, 0, 1, timeout_s=0.4) == [42]
        return took

    took = run_with_bus(cfg_for(slave.path), body)
    if fault == "bad_crc":  # a whole frame then silence: no need to wait out the timeout
        assert took < 0.5
    assert slave.violations == []


@pytest.mark.timeout(20)
def test_garbage_before_the_answer_is_skipped(pty_slave: SlaveFactory) -> None:
    unit = Unit(fault="garbage")
    unit.regs[5:7] = [0xABCD, 3]
    slave = pty_slave({1: unit})

    async def body(bus: SerialRtuBus) -> list[int]:
        return await bus.read(1, Table.HOLDING, 5, 2, timeout_s=0.5)

    assert run_with_bus(cfg_for(slave.path), body) == [0xABCD, 3]


@pytest.mark.timeout(20)
def test_dead_unit_holds_the_line_once_then_only_times_out(pty_slave: SlaveFactory) -> None:
    dead, alive = Unit(fault="dead"), Unit()
    alive.regs[0] = 5
    slave = pty_slave({1: dead, 2: alive})

    async def body(bus: SerialRtuBus) -> list[float]:
        took = []
        for _ in range(3):
            t0 = time.monotonic()
            with pytest.raises(BusTimeout):
                await bus.read(1, Table.HOLDING, 0, 1, timeout_s=0.15)
            took.append(time.monotonic() - t0)
            assert await bus.read(2, Table.HOLDING, 0, 1, timeout_s=0.5) == [5]
        assert bus.late.silent == {1} and bus.late.holds == 1 and bus.late.count == {}
        return took

    cfg = dataclasses.replace(cfg_for(slave.path), late_answer_window_s=1.0)
    first, *later = run_with_bus(cfg, body)
    # unknown unit: the line is held for a late answer until 1.0 s after the request; it never
    # came, so the unit is known silent and its later timeouts hold nothing (the same-unit guard,
    # 0.3 s of quiet, and the 0.15 s timeout)
    assert 1.0 <= first < 1.4
    assert all(0.15 <= t < 0.8 for t in later), later
    assert slave.violations == []


@pytest.mark.timeout(20)
def test_late_answer_is_never_taken_for_the_next_one(pty_slave: SlaveFactory) -> None:
    unit = Unit(delay_s=0.25)
    unit.regs[0:2] = [111, 111]  # the late answer carries these
    slave = pty_slave({1: unit})

    async def body(bus: SerialRtuBus) -> list[int]:
        with pytest.raises(BusTimeout):
            await bus.read(1, Table.HOLDING, 0, 2, timeout_s=0.1)
        unit.delay_s = 0.0
        unit.regs[0:2] = [222, 222]
        return await bus.read(1, Table.HOLDING, 0, 2, timeout_s=0.5)

    assert run_with_bus(cfg_for(slave.path, timeout_max_s=0.3), body) == [222, 222]
    assert slave.violations == []


@pytest.mark.timeout(20)
def test_stray_bytes_between_transactions_are_discarded(pty_slave: SlaveFactory) -> None:
    unit = Unit()
    unit.regs[0] = 1
    slave = pty_slave({1: unit})

    async def body(bus: SerialRtuBus) -> list[int]:
        assert await bus.read(1, Table.HOLDING, 0, 1, timeout_s=0.5) == [1]
        # a complete, valid-looking answer for the next request arrives unasked
        slave.send_raw(bytes.fromhex("0103020007f986"))
        await asyncio.sleep(0.01)
        unit.regs[0] = 2
        got = await bus.read(1, Table.HOLDING, 0, 1, timeout_s=0.5)
        assert bus.stray_bytes == 7
        return got

    assert run_with_bus(cfg_for(slave.path), body) == [2]


@pytest.mark.timeout(20)
def test_broadcast_write_gets_no_answer_and_turnaround_is_kept(pty_slave: SlaveFactory) -> None:
    units = {1: Unit(), 2: Unit()}
    slave = pty_slave(units, baud=9600, turnaround_s=0.02)

    async def body(bus: SerialRtuBus) -> list[int]:
        t0 = time.monotonic()
        await bus.write(0, Table.HOLDING, 3, [77], timeout_s=0.5)
        assert time.monotonic() - t0 < 0.25  # no answer awaited (timeout is 0.5 s)
        return await bus.read(2, Table.HOLDING, 3, 1, timeout_s=0.5)

    assert run_with_bus(cfg_for(slave.path, baud=9600, turnaround_ms=20), body) == [77]
    assert units[1].regs[3] == 77
    assert slave.violations == []


@pytest.mark.timeout(30)
def test_many_concurrent_callers_keep_t35_without_busy_waiting(pty_slave: SlaveFactory) -> None:
    units = {u: Unit(regs=[u * 1000 + i for i in range(200)]) for u in (1, 2, 3, 4)}
    slave = pty_slave(units, baud=19200)
    n_per_unit = 60

    async def poll(bus: SerialRtuBus, u: int) -> int:
        ok = 0
        for i in range(n_per_unit):
            vals = await bus.read(u, Table.HOLDING, i, 10, timeout_s=0.5)
            ok += vals == [u * 1000 + i + k for k in range(10)]
        return ok

    async def body(bus: SerialRtuBus) -> tuple[list[int], float, float]:
        c0, t0 = time.process_time(), time.monotonic()
        res = await asyncio.gather(*(poll(bus, u) for u in units))
        return list(res), time.process_time() - c0, time.monotonic() - t0

    oks, cpu, wall = run_with_bus(cfg_for(slave.path, baud=19200), body)
    assert oks == [n_per_unit] * 4
    assert slave.violations == []
    n = n_per_unit * 4
    print(f"rtu 19200 baud: {n} reads wall={wall:.2f}s cpu={cpu * 1e6 / n:.0f}us/read")
    # no busy waiting: the bus sleeps in the event loop between bytes (the measured process also
    # runs the slave thread; a polling loop would burn ~100% of a core here)
    assert cpu < 0.5 * wall


@pytest.mark.timeout(20)
def test_port_vanishing_is_bus_closed_and_close_is_final(pty_slave: SlaveFactory) -> None:
    slave = pty_slave({1: Unit()})

    async def body(bus: SerialRtuBus) -> None:
        assert await bus.read(1, Table.HOLDING, 0, 1, timeout_s=0.5) == [0]
        slave.stop()
        with pytest.raises(BusClosed):
            for _ in range(3):
                await bus.read(1, Table.HOLDING, 0, 1, timeout_s=0.2)
        await bus.close()
        with pytest.raises(BusClosed):
            await bus.read(1, Table.HOLDING, 0, 1, timeout_s=0.2)

    run_with_bus(cfg_for(slave.path), body)


@pytest.mark.timeout(10)
def test_missing_port_is_bus_closed_naming_it() -> None:
    async def body(bus: SerialRtuBus) -> None:
        with pytest.raises(BusClosed, match="/dev/does-not-exist"):
            await bus.read(1, Table.HOLDING, 0, 1, timeout_s=0.2)

    run_with_bus(cfg_for("/dev/does-not-exist"), body)


def test_min_timeout_covers_both_frames_and_turnaround() -> None:
    bus = SerialRtuBus(SerialBus(name="b", port="/dev/null", baud=9600, turnaround_ms=5))
    char = 10 / 9600  # start + 8 data + stop
    assert bus.min_timeout_s(Table.HOLDING, 10) == pytest.approx((8 + 25) * char + 0.005)
    assert bus.min_timeout_s(Table.COIL, 9) == pytest.approx((8 + 7) * char + 0.005)
