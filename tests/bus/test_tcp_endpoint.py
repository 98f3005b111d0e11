"""TcpEndpoint against a real pymodbus server and a scripted raw MBAP server."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import AsyncIterator

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


@contextlib.asynccontextmanager
async def served(srv: RawServer, concurrency: int = 2) -> AsyncIterator[TcpEndpoint]:
    """An endpoint (``concurrency`` in flight) to ``srv``, started; both closed after."""
    port = await srv.start()
    ep = endpoint(port, concurrency)
    try:
        yield ep
    finally:
        await ep.close()
        await srv.stop()


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
        async with served(srv, 3) as ep:
            res = await asyncio.gather(
                *(ep.read(1, Table.HOLDING, a, 4, timeout_s=2) for a in range(40))
            )
        return list(res), srv.max_in_flight

    res, max_in_flight = asyncio.run(main())
    assert res == [[a, a + 1, a + 2, a + 3] for a in range(40)]
    assert max_in_flight == 3


@pytest.mark.timeout(20)
def test_a_request_cancelled_while_waiting_for_a_slot_loses_no_slot() -> None:
    async def main() -> tuple[list[object], int]:
        srv = RawServer(delay_s=0.05)
        async with served(srv, 1) as ep:
            tasks = [asyncio.create_task(ep.read(1, Table.HOLDING, a, 2, timeout_s=2))
                     for a in range(4)]
            await asyncio.sleep(0.01)  # the first is in flight, three wait for the slot
            tasks[1].cancel()
            tasks[2].cancel()
            res = await asyncio.gather(*tasks, return_exceptions=True)
            again = await ep.read(1, Table.HOLDING, 9, 1, timeout_s=2)  # slots all given back
            assert ep._inflight == 0 and not ep._slot_waiters
        return [*res, again], srv.max_in_flight

    res, max_in_flight = asyncio.run(main())
    assert res[0] == [0, 1] and res[3] == [3, 4] and res[4] == [9]
    assert isinstance(res[1], asyncio.CancelledError) and isinstance(res[2], asyncio.CancelledError)
    assert max_in_flight == 1


@pytest.mark.timeout(20)
def test_late_answer_with_stale_tid_is_discarded() -> None:
    async def main() -> None:
        srv = RawServer(mode="late_first", late_s=0.2)
        async with served(srv, 1) as ep:
            with pytest.raises(BusTimeout):
                await ep.read(1, Table.HOLDING, 100, 2, timeout_s=0.05)
            # the late answer ([100, 101]) arrives while this one is in flight
            srv.delay_s = 0.3
            assert await ep.read(1, Table.HOLDING, 7, 2, timeout_s=1) == [7, 8]
            assert ep.discarded == 1

    asyncio.run(main())


@pytest.mark.timeout(20)
def test_stalled_endpoint_times_out_then_reconnects() -> None:
    async def main() -> None:
        srv = RawServer(mode="stall")
        async with served(srv, 1) as ep:
            for _ in range(STALL_LIMIT):
                t0 = time.monotonic()
                with pytest.raises(BusTimeout):
                    await ep.read(1, Table.HOLDING, 0, 1, timeout_s=0.05)
                assert time.monotonic() - t0 < 1.0
            srv.mode = "ok"
            assert await ep.read(1, Table.HOLDING, 0, 1, timeout_s=1) == [0]
            assert srv.connections == 2  # the half-open session was dropped

    asyncio.run(main())


@pytest.mark.timeout(20)
def test_reset_fails_in_flight_then_reconnects() -> None:
    async def main() -> None:
        srv = RawServer(mode="reset")
        async with served(srv) as ep:
            with pytest.raises(BusClosed, match="connection lost"):
                await ep.read(1, Table.HOLDING, 0, 1, timeout_s=1)
            srv.mode = "ok"
            assert await ep.read(1, Table.HOLDING, 3, 1, timeout_s=1) == [3]
            assert srv.connections == 2

    asyncio.run(main())


@pytest.mark.timeout(20)
def test_garbage_stream_is_frame_error_and_recovers() -> None:
    async def main() -> None:
        srv = RawServer(mode="garbage")
        async with served(srv) as ep:
            with pytest.raises(FrameError, match="bad MBAP header deadbeefffff00 at byte 0"):
                await ep.read(1, Table.HOLDING, 0, 1, timeout_s=1)
            srv.mode = "ok"
            await asyncio.sleep(FAST_RETRY.max_s)
            assert await ep.read(1, Table.HOLDING, 9, 1, timeout_s=1) == [9]

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


@pytest.mark.timeout(20)
def test_requests_arriving_together_share_one_connect() -> None:
    async def main() -> None:
        srv = RawServer()
        async with served(srv, 5) as ep:
            res = await asyncio.gather(*(ep.read(1, Table.HOLDING, a, 1, timeout_s=1)
                                         for a in range(5)))
            assert res == [[a] for a in range(5)]
            assert srv.connections == 1 and ep.reconnects == 1

    asyncio.run(main())


@pytest.mark.timeout(20)
def test_requests_arriving_together_at_a_refusing_endpoint_try_once() -> None:
    async def main() -> list[BaseException]:
        ep = endpoint(free_port(), concurrency=4)
        try:
            res = await asyncio.gather(*(ep.read(1, Table.HOLDING, a, 1, timeout_s=1)
                                         for a in range(4)), return_exceptions=True)
        finally:
            await ep.close()
        return [r for r in res if isinstance(r, BaseException)]

    errs = asyncio.run(main())
    assert len(errs) == 4 and all(isinstance(e, BusClosed) for e in errs)
    assert "connect failed" in str(errs[0])
    assert all("next try in" in str(e) for e in errs[1:])


@pytest.mark.timeout(20)
def test_a_full_socket_buffer_queues_the_rest_and_every_request_arrives_whole() -> None:
    """The server reads nothing for a while: the endpoint's sends soon find the socket's buffer
    full (a partial send, then none at all); the rest waits for the socket to be writable, in
    order, and every request reaches the server whole (it parses the stream strictly)."""

    async def main() -> None:
        srv = RawServer(rcvbuf=2048)
        port = await srv.start()
        ep = endpoint(port, concurrency=200)
        tasks: list[asyncio.Task[None]] = []
        try:
            assert await ep.read(1, Table.HOLDING, 1, 1, timeout_s=1) == [1]  # connected
            assert ep._sock is not None
            ep._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            srv.hold = asyncio.get_running_loop().create_future()  # after the next request
            tasks = [asyncio.create_task(
                ep.write(1, Table.HOLDING, 100 * k, [k] * 123, timeout_s=5)) for k in range(200)]
            await asyncio.sleep(0.2)
            assert ep._wbuf is not None and len(ep._wbuf) > 10_000  # queued, not dropped
            assert srv.requests <= 2
            srv.hold.set_result(None)
            await asyncio.gather(*tasks)
            assert srv.requests == 201
            assert ep._wbuf is None
            assert await ep.read(1, Table.HOLDING, 7, 2, timeout_s=1) == [7, 8]
        finally:
            await ep.close()
            await srv.stop()
            await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(main())


@pytest.mark.timeout(20)
def test_peer_closing_mid_answer_fails_the_request_then_reconnects() -> None:
    async def main() -> None:
        srv = RawServer(mode="half")
        async with served(srv) as ep:
            with pytest.raises(BusClosed, match="connection lost: closed by peer"):
                await ep.read(1, Table.HOLDING, 7, 1, timeout_s=1)
            assert ep._rest == b""  # the half answer is gone with its connection
            srv.mode = "ok"
            assert await ep.read(1, Table.HOLDING, 7, 1, timeout_s=1) == [7]  # at once
            assert srv.connections == 2

    asyncio.run(main())


@pytest.mark.timeout(20)
def test_close_fails_the_request_in_flight() -> None:
    async def main() -> None:
        srv = RawServer(mode="stall")
        port = await srv.start()
        ep = endpoint(port)
        try:
            task = asyncio.create_task(ep.read(1, Table.HOLDING, 0, 1, timeout_s=5))
            await asyncio.sleep(0.1)
            await ep.close()
            with pytest.raises(BusClosed, match="closed"):
                await task
        finally:
            await srv.stop()

    asyncio.run(main())


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.timeout(30)
def test_every_way_a_connection_ends_closes_its_socket_and_unwatches_it() -> None:
    """Refused, reset, peer closed mid-answer, garbage, stalled, closed with a request in flight:
    no socket stays open and the loop watches no descriptor of the endpoint's afterwards."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, asyncio.selector_events.BaseSelectorEventLoop)
        watched = loop._selector.get_map  # type: ignore[attr-defined]  # fd -> key
        before_watched = set(watched())
        before = _open_fds()
        with pytest.raises(BusClosed, match="connect failed"):
            await endpoint(free_port()).read(1, Table.HOLDING, 0, 1, timeout_s=1)
        for mode, err in [("reset", BusClosed), ("half", BusClosed), ("garbage", FrameError),
                          ("stall", BusTimeout)]:
            srv = RawServer(mode=mode)
            async with served(srv, 1) as ep:
                for _ in range(STALL_LIMIT if mode == "stall" else 1):
                    with pytest.raises(err):
                        await ep.read(1, Table.HOLDING, 0, 1, timeout_s=0.05)
                assert ep._sock is None, mode  # the endpoint dropped the connection itself
                srv.mode = "stall"
                task = asyncio.create_task(ep.read(1, Table.HOLDING, 0, 1, timeout_s=5))
                await asyncio.sleep(FAST_RETRY.max_s * 1.5)  # reconnected, request in flight
                assert ep._sock is not None, mode
            with pytest.raises(BusClosed):
                await task
            assert ep._sock is None and ep._wbuf is None and ep._pending is None
        assert set(watched()) == before_watched
        assert _open_fds() == before

    asyncio.run(main())


@pytest.mark.timeout(20)
def test_an_idle_endpoint_keeps_no_per_request_state() -> None:
    """A district holds hundreds of endpoints, idle between polls: no instance dict, and the
    pending dict, backoff, connect future and send queue exist only while needed."""

    async def main() -> None:
        srv = RawServer()
        async with served(srv) as ep:
            assert not hasattr(ep, "__dict__")
            assert await ep.read(1, Table.HOLDING, 1, 1, timeout_s=1) == [1]
            assert ep._sock is not None
            assert (ep._pending, ep._backoff, ep._connecting, ep._wbuf, ep._slot_waiters) == (
                None, None, None, None, None)

    asyncio.run(main())


@pytest.mark.timeout(20)
def test_a_cancel_as_the_connection_completes_is_not_lost(monkeypatch: pytest.MonkeyPatch) -> None:
    """The poller stopping (a reload) cancels a poll job just as its endpoint's connection is
    made: the request ends cancelled. With asyncio.wait_for around the connect, Python 3.11
    handed the socket back instead and the job went on polling after the poller's stop, which
    never ended (the reload hung: poller_stop_stuck)."""
    from edge_agent.bus import tcp_endpoint, tcp_socket

    real = tcp_socket.open_connection
    job: list[asyncio.Task[list[int]]] = []

    async def connect(loop: asyncio.AbstractEventLoop, host: str, port: int) -> socket.socket:
        sock = await real(loop, host, port)
        job[0].cancel()  # the cancel comes as the connect completes
        return sock

    monkeypatch.setattr(tcp_endpoint, "open_connection", connect)

    async def main() -> None:
        async with served(RawServer()) as ep:
            job.append(asyncio.create_task(ep.read(1, Table.HOLDING, 0, 2, timeout_s=1)))
            await asyncio.wait(job, timeout=5)
            assert job[0].done(), "the request neither ended nor was cancelled"
            assert job[0].cancelled(), f"the cancel was lost: the read gave {job[0].result()}"
            monkeypatch.setattr(tcp_endpoint, "open_connection", real)
            assert await ep.read(1, Table.HOLDING, 0, 2, timeout_s=1) == [0, 1]  # still usable

    asyncio.run(main())
