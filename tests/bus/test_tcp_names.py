"""TcpEndpoint to endpoints named by host name and by IPv6 address (bus/tcp_socket.py: a numeric
host is resolved inline, a name through the loop's resolver), against real servers."""

from __future__ import annotations

import asyncio
import socket

import pytest

from edge_agent.bus.tcp_endpoint import TcpEndpoint
from edge_agent.config.model import TcpBus
from edge_agent.errors import BusClosed
from edge_agent.profiles.model import Table
from edge_agent.retry import RetryPolicy
from tests.bus.tcp_servers import RawServer

FAST_RETRY = RetryPolicy(initial_s=0.05, factor=2.0, max_s=0.2, jitter=0.0)


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


async def _echo_registers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """fc 3 only: registers = address + i."""
    try:
        while True:
            head = await reader.readexactly(7)
            body = await reader.readexactly(int.from_bytes(head[4:6], "big") - 1)
            addr, count = int.from_bytes(body[1:3], "big"), int.from_bytes(body[3:5], "big")
            pdu = bytes((3, 2 * count)) + b"".join(
                (addr + i).to_bytes(2, "big") for i in range(count))
            writer.write(head[:4] + (len(pdu) + 1).to_bytes(2, "big") + head[6:7] + pdu)
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


@pytest.mark.timeout(20)
def test_a_host_name_is_resolved_and_read() -> None:
    async def main() -> None:
        srv = RawServer()
        port = await srv.start()  # 127.0.0.1, which "localhost" names on every Debian box
        ep = TcpEndpoint(TcpBus(name="by-name", host="localhost", port=port), retry=FAST_RETRY)
        try:
            assert await ep.read(1, Table.HOLDING, 7, 2, timeout_s=2) == [7, 8]
            assert ep._sock is not None and ep._sock.family in (socket.AF_INET, socket.AF_INET6)
        finally:
            await ep.close()
            await srv.stop()

    asyncio.run(main())


@pytest.mark.timeout(20)
def test_a_name_that_does_not_resolve_is_bus_closed_naming_the_endpoint() -> None:
    async def main() -> None:
        # .invalid never resolves (RFC 6761), with or without a network
        ep = TcpEndpoint(TcpBus(name="nowhere", host="plc.invalid", port=502), retry=FAST_RETRY)
        try:
            with pytest.raises(BusClosed, match=r"endpoint=plc\.invalid:502: connect failed"):
                await ep.read(1, Table.HOLDING, 0, 1, timeout_s=2)
            with pytest.raises(BusClosed, match="next try in"):  # backs off like a refusal
                await ep.read(1, Table.HOLDING, 0, 1, timeout_s=2)
            assert ep._sock is None
        finally:
            await ep.close()

    asyncio.run(main())


@pytest.mark.timeout(20)
@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this host")
def test_an_ipv6_endpoint_is_read() -> None:
    async def main() -> None:
        server = await asyncio.start_server(_echo_registers, "::1", 0)
        port = server.sockets[0].getsockname()[1]
        ep = TcpEndpoint(TcpBus(name="v6", host="::1", port=port), retry=FAST_RETRY)
        try:
            assert await ep.read(1, Table.HOLDING, 3, 3, timeout_s=2) == [3, 4, 5]
            assert ep._sock is not None and ep._sock.family == socket.AF_INET6
        finally:
            await ep.close()
            server.close()
            await server.wait_closed()

    asyncio.run(main())
