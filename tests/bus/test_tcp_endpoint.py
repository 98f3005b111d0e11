"""TcpEndpoint against a real pymodbus server and a scripted raw MBAP server."""

from __future__ import annotations

import asyncio
import time

import pytest

from edge_agent.bus.tcp_endpoint import STALL_LIMIT, TcpEndpoint
from edge_agent.config.model import TcpBus
from edge_agent.errors import BusClosed, BusTimeout, FrameError, ModbusException
from edge_agent.profiles.model import Table
from edge_agent.retry import RetryPolicy
from simulators.loopback import free_port
from tests.bus.tcp_servers import RawServer, pymodbus_server

FAST_RETRY = RetryPolicy(initial_s=0.05, factor=2.0, max_s=0.2, jitter=0.0)


def endpoint(port: int, concurrency: int = 2) -> TcpEndpoint:
    cfg = TcpBus(name="tcp-test", host="127.0.0.1", port=port, concurrency=concurrency)
    return TcpEndpoint(cfg, retry=FAST_RETRY)


@pytest.mark.timeout(20)
def test_reads_and_writes_against_pymodbus() -> None:
    async def main() -> None:
        async with pymodbus_server(unit=3) as port:
            ep = endpoint(port)
            try:
                assert await ep.read(3, Table.HOLDING, 5, 3, timeout_s=1) == [5, 6, 7]
                assert await ep.read(3, Table.INPUT, 98, 2, timeout_s=1) == [1098, 1099]
                assert await ep.read(3, Table.DISCRETE, 0, 7, timeout_s=1) == [1, 0, 0, 1, 0, 0, 1]
                await ep.write(3, Table.HOLDING, 10, [0xBEEF], timeout_s=1)
                await ep.write(3, Table.HOLDING, 20, [1, 2, 3], timeout_s=1)
                await ep.write(3, Table.COIL, 4, [1], timeout_s=1)
                await ep.write(3, Table.COIL, 8, [1, 1, 0, 1], timeout_s=1)
                assert await ep.read(3, Table.HOLDING, 10, 1, timeout_s=1) == [0xBEEF]
                assert await ep.read(3, Table.HOLDING, 20, 3, timeout_s=1) == [1, 2, 3]
                assert await ep.read(3, Table.COIL, 3, 10, timeout_s=1) == [
                    0, 1, 0, 0, 0, 1, 1, 0, 1, 0,
                ]
                with pytest.raises(ModbusException) as info:
                    await ep.read(3, Table.HOLDING, 500, 2, timeout_s=1)
                assert info.value.code == ModbusException.ILLEGAL_DATA_ADDRESS
                assert ep.min_timeout_s(Table.HOLDING, 10) == 0.0
            finally:
                await ep.close()

    asyncio.run(main())


@pytest.mark.timeout(20)
def test_concurrency_limit_and_tid_matching() -> None:
    async def main() -> tuple[list[list[int]], int]:
        srv = RawServer(delay_s=0.01)
        port = await srv.start()
        ep = endpoint(port, concurrency=3)
        try:
            res = await asyncio.gather(
                *(ep.read(1, Table.HOLDING, a, 4, timeout_s=2) for a in range(40))
            )
        finally:
            await ep.close()
            await srv.stop()
        return list(res), srv.max_in_flight

    res, max_in_flight = asyncio.run(main())
    assert res == [[a, a + 1, a + 2, a + 3] for a in range(40)]
    assert max_in_flight == 3


@pytest.mark.timeout(20)
def test_a_request_cancelled_while_waiting_for_a_slot_loses_no_slot() -> None:
    async def main() -> tuple[list[object], int]:
        srv = RawServer(delay_s=0.05)
        port = await srv.start()
        ep = endpoint(port, concurrency=1)
        try:
            tasks = [asyncio.create_task(ep.read(1, Table.HOLDING, a, 2, timeout_s=2))
                     for a in range(4)]
            await asyncio.sleep(0.01)  # the first is in flight, three wait for the slot
            tasks[1].cancel()
            tasks[2].cancel()
            res = await asyncio.gather(*tasks, return_exceptions=True)
            again = await ep.read(1, Table.HOLDING, 9, 1, timeout_s=2)  # slots all given back
            assert ep._inflight == 0 and not ep._slot_waiters
        finally:
            await ep.close()
            await srv.stop()
        return [*res, again], srv.max_in_flight

    res, max_in_flight = asyncio.run(main())
    assert res[0] == [0, 1] and res[3] == [3, 4] and res[4] == [9]
    assert isinstance(res[1], asyncio.CancelledError) and isinstance(res[2], asyncio.CancelledError)
    assert max_in_flight == 1


@pytest.mark.timeout(20)
def test_late_answer_with_stale_tid_is_discarded() -> None:
    async def main() -> None:
        srv = RawServer(mode="late_first", late_s=0.2)
        port = await srv.start()
        ep = endpoint(port, concurrency=1)
        try:
            with pytest.raises(BusTimeout):
                await ep.read(1, Table.HOLDING, 100, 2, timeout_s=0.05)
            # the late answer ([100, 101]) arrives while this one is in flight
            srv.delay_s = 0.3
            assert await ep.read(1, Table.HOLDING, 7, 2, timeout_s=1) == [7, 8]
            assert ep.discarded == 1
        finally:
            await ep.close()
            await srv.stop()

    asyncio.run(main())


@pytest.mark.timeout(20)
def test_stalled_endpoint_times_out_then_reconnects() -> None:
    async def main() -> None:
        srv = RawServer(mode="stall")
        port = await srv.start()
        ep = endpoint(port, concurrency=1)
        try:
            for _ in range(STALL_LIMIT):
                t0 = time.monotonic()
                with pytest.raises(BusTimeout):
                    await ep.read(1, Table.HOLDING, 0, 1, timeout_s=0.05)
                assert time.monotonic() - t0 < 1.0
            srv.mode = "ok"
            assert await ep.read(1, Table.HOLDING, 0, 1, timeout_s=1) == [0]
            assert srv.connections == 2  # the half-open session was dropped
        finally:
            await ep.close()
            await srv.stop()

    asyncio.run(main())


@pytest.mark.timeout(20)
def test_reset_fails_in_flight_then_reconnects() -> None:
    async def main() -> None:
        srv = RawServer(mode="reset")
        port = await srv.start()
        ep = endpoint(port)
        try:
            with pytest.raises(BusClosed, match="connection lost"):
                await ep.read(1, Table.HOLDING, 0, 1, timeout_s=1)
            srv.mode = "ok"
            assert await ep.read(1, Table.HOLDING, 3, 1, timeout_s=1) == [3]
            assert srv.connections == 2
        finally:
            await ep.close()
            await srv.stop()

    asyncio.run(main())


@pytest.mark.timeout(20)
def test_garbage_stream_is_frame_error_and_recovers() -> None:
    async def main() -> None:
        srv = RawServer(mode="garbage")
        port = await srv.start()
        ep = endpoint(port)
        try:
            with pytest.raises(FrameError, match="bad MBAP header deadbeefffff00 at byte 0"):
                await ep.read(1, Table.HOLDING, 0, 1, timeout_s=1)
            srv.mode = "ok"
            await asyncio.sleep(FAST_RETRY.max_s)
            assert await ep.read(1, Table.HOLDING, 9, 1, timeout_s=1) == [9]
        finally:
            await ep.close()
            await srv.stop()

    asyncio.run(main())


@pytest.mark.timeout(20)
def test_refused_backs_off_then_connects_when_endpoint_returns() -> None:
    async def main() -> None:
        port = free_port()
        ep = endpoint(port)
        srv = RawServer()
        try:
            with pytest.raises(BusClosed, match="connect failed"):
                await ep.read(1, Table.HOLDING, 0, 1, timeout_s=1)
            with pytest.raises(BusClosed, match="next try in"):  # fails fast while backing off
                await ep.read(1, Table.HOLDING, 0, 1, timeout_s=1)
            await srv.start(port)
            await asyncio.sleep(FAST_RETRY.initial_s * 1.5)
            assert await ep.read(1, Table.HOLDING, 4, 1, timeout_s=1) == [4]
        finally:
            await ep.close()
            await srv.stop()
        with pytest.raises(BusClosed, match="closed"):
            await ep.read(1, Table.HOLDING, 4, 1, timeout_s=1)

    asyncio.run(main())
