"""AtClient on real ptys: the NB-IoT module simulator (simulators.transports.at_modem) and a
scripted peer for line noise and late answers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import pytest

from edge_agent.bus.at import AtClient
from edge_agent.bus.at_points import read_point
from edge_agent.config.model import BusKind, SerialBus
from edge_agent.errors import AtError, BusClosed, BusTimeout, CodecError
from edge_agent.profiles.model import AtPoint, DataType
from simulators.devices.nbiot import NbiotState
from simulators.faults import DeviceFault
from simulators.transports.at_modem import AtModem
from tests.bus.scripted_pty import Script, ScriptedPty

T = TypeVar("T")


@pytest.fixture
def modem() -> Iterator[AtModem]:
    m = AtModem(NbiotState(name="nb-test", seed=7, csq=21, rsrp=-85.0))
    m.start()
    yield m
    m.stop()


@pytest.fixture
def scripted() -> Iterator[Callable[[Script], ScriptedPty]]:
    peers: list[ScriptedPty] = []

    def make(script: Script) -> ScriptedPty:
        p = ScriptedPty(script)
        p.start()
        peers.append(p)
        return p

    yield make
    for p in peers:
        p.stop()


def with_client(
    path: str,
    body: Callable[[AtClient], Awaitable[T]],
    on_urc: Callable[[str], None] | None = None,
) -> T:
    async def main() -> T:
        client = AtClient(path, 115200, name="nbiot-test", on_urc=on_urc)
        try:
            return await body(client)
        finally:
            await client.close()

    return asyncio.run(main())


@pytest.mark.timeout(20)
def test_commands_against_the_module_simulator(modem: AtModem) -> None:
    async def body(c: AtClient) -> None:
        assert await c.command("ATI", 1.0) == ["Quectel", "BC95-G", "Revision:BC95GJBR01A09"]
        assert await c.command("AT+CSQ", 1.0) == [f"+CSQ:{modem.state.csq},99"]
        with pytest.raises(AtError) as info:
            await c.command("AT+CGSN=9", 1.0)
        assert info.value.cme == 50
        with pytest.raises(AtError, match="ERROR"):
            await c.command("AT+NOPE", 1.0)
        await c.command("ATE0", 1.0)  # echo off: answers still parse
        assert not modem.echo
        assert await c.command("AT+CGATT?", 1.0) in (["+CGATT:0"], ["+CGATT:1"])
        rsrp = AtPoint(
            "rsrp", "AT+NUESTATS", r"^Signal power:(-?\d+)", type=DataType.FLOAT32, scale=0.1
        )
        value = await read_point(c, rsrp, timeout_s=1.0)
        assert isinstance(value, float) and -140 < value < -40
        with pytest.raises(CodecError):
            await c.command("AT+CSQ\rATZ", 1.0)

    with_client(modem.path, body)


@pytest.mark.timeout(20)
@pytest.mark.parametrize("echo", [True, False])
def test_urcs_before_and_inside_answers_are_routed_away(modem: AtModem, echo: bool) -> None:
    modem.echo = echo
    got: list[str] = []

    async def body(c: AtClient) -> list[str]:
        await c.open()
        modem.push_urc("+CEREG:5")
        await asyncio.sleep(0.1)  # arrives while idle
        modem.inject_urc_mid_response("+CSCON:1")
        lines = await c.command("AT+NUESTATS", 1.0)
        assert len(lines) == 12 and lines[0].startswith("Signal power:")
        modem.inject_urc_mid_response("+NPSMR:1")
        assert await c.command("AT+CEREG=1", 1.0) == []
        return lines

    with_client(modem.path, body, on_urc=got.append)
    assert got == ["+CEREG:5", "+CSCON:1", "+NPSMR:1"]


@pytest.mark.timeout(20)
def test_dead_module_times_out_then_recovers(modem: AtModem) -> None:
    async def body(c: AtClient) -> None:
        modem.state.faults.kind = DeviceFault.DEAD
        t0 = time.monotonic()
        with pytest.raises(BusTimeout):
            await c.command("AT+CSQ", 0.2)
        assert time.monotonic() - t0 < 1.0
        modem.state.faults.clear()
        assert await c.command("AT+CSQ", 1.0) == [f"+CSQ:{modem.state.csq},99"]

    with_client(modem.path, body)


@pytest.mark.timeout(20)
@pytest.mark.parametrize("echo", [True, False])
def test_late_answer_is_not_taken_for_the_next_command(
    echo: bool, scripted: Callable[[Script], ScriptedPty]
) -> None:
    calls = {"n": 0}

    def script(cmd: str) -> tuple[float, bytes]:
        calls["n"] += 1
        first = calls["n"] == 1
        echo_bytes = (cmd + "\r").encode() if echo else b""
        value = 5 if first else 20
        answer = echo_bytes + f"\r\n+CSQ: {value},99\r\n\r\nOK\r\n".encode()
        return (0.3 if first else 0.0), answer

    peer = scripted(script)

    async def body(c: AtClient) -> list[str]:
        with pytest.raises(BusTimeout):  # its answer comes 0.3 s after sending
            await c.command("AT+CSQ", 0.25)
        lines = await c.command("AT+CSQ", 1.0)
        assert c.stale_lines >= 2
        return lines

    assert with_client(peer.path, body) == ["+CSQ: 20,99"]


@pytest.mark.timeout(20)
def test_line_noise_before_and_within_the_answer_is_dropped(
    scripted: Callable[[Script], ScriptedPty],
) -> None:
    noise = b"\x00\xff\xfe garbage\x13\x37"

    def script(cmd: str) -> tuple[float, bytes]:
        return 0.0, noise + b"\r\n+CSQ: 20,99\r\n" + noise + b"\r\n\r\nOK\r\n"

    peer = scripted(script)

    async def body(c: AtClient) -> list[str]:
        return await c.command("AT+CSQ", 1.0)

    assert with_client(peer.path, body) == ["+CSQ: 20,99"]


@pytest.mark.timeout(20)
def test_vanished_port_is_bus_closed(scripted: Callable[[Script], ScriptedPty]) -> None:
    peer = scripted(lambda cmd: (5.0, b""))

    async def body(c: AtClient) -> None:
        task = asyncio.create_task(c.command("AT+CSQ", 3.0))
        await asyncio.sleep(0.1)
        peer.stop()
        t0 = time.monotonic()
        with pytest.raises(BusClosed):
            await task
        assert time.monotonic() - t0 < 1.0
        with pytest.raises(BusClosed):
            await c.command("AT", 1.0)

    with_client(peer.path, body)


@pytest.mark.timeout(20)
def test_client_from_agent_config(modem: AtModem) -> None:
    cfg = SerialBus(name="nbiot-cfg", port=modem.path, baud=9600, parity="E", kind=BusKind.AT)

    async def main() -> list[str]:
        client = AtClient.from_config(cfg)
        try:
            return await client.command("AT+CIMI", 1.0)
        finally:
            await client.close()

    assert asyncio.run(main()) == [modem.state.imsi]


@pytest.mark.timeout(20)
def test_a_cancel_as_the_answer_arrives_is_not_lost(modem: AtModem) -> None:
    """The poller stopping (a reload) cancels a poll job in the very loop callback that brought
    its command's final result: the command ends cancelled. With asyncio.wait_for, Python 3.11
    returned the answer instead and the job went on polling after the poller's stop, which never
    ended (the reload hung: poller_stop_stuck)."""

    async def body(c: AtClient) -> None:
        await c.command("ATE0", 1.0)  # the port is open, echo off
        port = c._port
        hear = port.listener
        assert hear is not None
        job: list[asyncio.Task[list[str]]] = []

        def answer_then_cancel(data: bytes) -> None:
            hear(data)
            if c._done is not None and c._done.done():  # the final result came: cancel now
                job[0].cancel()

        port.listener = answer_then_cancel
        job.append(asyncio.create_task(c.command("AT+CSQ", 1.0)))
        await asyncio.wait(job, timeout=5)
        assert job[0].done(), "the command neither ended nor was cancelled"
        assert job[0].cancelled(), f"the cancel was lost: the command gave {job[0].result()}"
        port.listener = hear
        assert await c.command("AT+CSQ", 1.0) == [f"+CSQ:{modem.state.csq},99"]  # still usable

    with_client(modem.path, body)


@pytest.mark.timeout(20)
def test_a_cancelled_commands_late_answer_is_not_taken_for_the_next(
    scripted: Callable[[Script], ScriptedPty],
) -> None:
    """A command cancelled before its answer came (a job cancelled, a caller's own deadline)
    leaves the line as a timeout does: the next command waits until the line is quiet, so the
    cancelled one's late answer is dropped, never taken for the next command's."""
    calls = {"n": 0}

    def script(cmd: str) -> tuple[float, bytes]:
        calls["n"] += 1
        value = 5 if calls["n"] == 1 else 20
        return (0.3 if calls["n"] == 1 else 0.0), f"\r\n+CSQ: {value},99\r\n\r\nOK\r\n".encode()

    peer = scripted(script)

    async def body(c: AtClient) -> list[str]:
        first = asyncio.create_task(c.command("AT+CSQ", 1.0))
        await asyncio.sleep(0.1)  # sent; its answer comes 0.2 s later
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        lines = await c.command("AT+CSQ", 1.0)
        assert c.stale_lines >= 2
        return lines

    assert with_client(peer.path, body) == ["+CSQ: 20,99"]
