"""The Modbus TCP transport against real clients: pymodbus' AsyncModbusTcpClient, raw sockets and
the mbpoll command-line tool. Every test runs server and client in one event loop (no threads)."""

from __future__ import annotations

import asyncio
import re
import shutil
import struct
import time
from collections.abc import Awaitable, Callable

import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException as PmModbusException

from edge_agent.profiles import codec
from edge_agent.profiles.model import ModbusPoint, Table
from simulators.devices.profile_device import ProfileDevice
from simulators.faults import DeviceFault, EndpointFault
from simulators.transports.tcp import TcpEndpoint

from .conftest import DeviceMaker

Body = Callable[[TcpEndpoint, AsyncModbusTcpClient], Awaitable[None]]


def serve(make: DeviceMaker, body: Body) -> None:
    """Run ``body`` against a gateway endpoint: lamp = unit 1, environment = unit 2."""

    async def main() -> None:
        ep = TcpEndpoint("pole-01", [make("street_lamp", "lamp-01", 1),
                                     make("pole_environment", "env-01", 2)])
        port = await ep.start()
        client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=0.5, retries=0,
                                      reconnect_delay=0)
        try:
            assert await client.connect()
            await body(ep, client)
        finally:
            client.close()
            await ep.stop()

    asyncio.run(main())


@pytest.mark.timeout(20)
def test_reads_match_the_codec_and_writes_reach_the_model(make: DeviceMaker) -> None:
    async def body(ep: TcpEndpoint, client: AsyncModbusTcpClient) -> None:
        dev = ep.store.units[1]
        assert isinstance(dev, ProfileDevice)
        rr = await client.read_input_registers(0, count=10, device_id=1)
        assert not rr.isError()
        power = dev.profile.point("power")
        assert isinstance(power, ModbusPoint)
        assert rr.registers[2:3] == codec.encode(power, dev.model.values["power"])
        assert rr.registers == dev.read(Table.INPUT, 0, 10)
        wr = await client.write_register(0, 30, device_id=1)
        assert not wr.isError()
        assert dev.model.values["dimming"] == 30
        bits = await client.read_coils(0, count=1, device_id=1)
        assert bits.bits[0] is True
        await client.write_coil(0, False, device_id=1)
        assert dev.model.values["lamp_on"] is False and dev.model.values["power"] == 0.0
        env = await client.read_holding_registers(0, count=2, device_id=2)
        assert env.registers == ep.store.units[2].read(Table.HOLDING, 0, 2)
        bad = await client.write_register(0, 150, device_id=1)  # dimming max is 100
        assert bad.isError() and bad.exception_code == 3
        unknown = await client.read_holding_registers(0, count=1, device_id=9)
        assert unknown.isError() and unknown.exception_code == 0x0B

    serve(make, body)


@pytest.mark.timeout(20)
def test_device_faults_dead_slow_exception(make: DeviceMaker) -> None:
    async def body(ep: TcpEndpoint, client: AsyncModbusTcpClient) -> None:
        dev = ep.store.units[1]
        dev.faults.kind = DeviceFault.EXCEPTION
        dev.faults.exception_code = 6
        rr = await client.read_input_registers(0, count=3, device_id=1)
        assert rr.isError() and rr.exception_code == 6
        dev.faults.kind = DeviceFault.SLOW
        dev.faults.slow_s = 0.3
        t0 = time.monotonic()
        rr = await client.read_input_registers(0, count=3, device_id=1)
        assert not rr.isError() and time.monotonic() - t0 >= 0.3
        dev.faults.kind = DeviceFault.DEAD
        with pytest.raises(PmModbusException):
            await client.read_input_registers(0, count=3, device_id=1)
        # the other unit behind the same gateway still answers
        dev.faults.clear()
        assert await client.connect()
        rr = await client.read_holding_registers(0, count=2, device_id=2)
        assert not rr.isError()

    serve(make, body)


def mbap(tid: int, unit: int, fc: int, address: int, count: int) -> bytes:
    return struct.pack(">HHHBBHH", tid, 0, 6, unit, fc, address, count)


@pytest.mark.timeout(20)
def test_pipelined_requests_keep_their_transaction_ids(make: DeviceMaker) -> None:
    """A late answer must not take the transaction id of the request that came after it."""

    async def main() -> None:
        lamp_dev = make("street_lamp", "lamp-01", 1)
        env_dev = make("pole_environment", "env-01", 2)
        ep = TcpEndpoint("pole-01", [lamp_dev, env_dev])
        port = await ep.start()
        lamp_dev.faults.kind = DeviceFault.SLOW
        lamp_dev.faults.slow_s = 0.3
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(mbap(11, 1, 4, 0, 2))
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(mbap(12, 2, 3, 0, 2))
            answers = {}
            for _ in range(2):
                head = await asyncio.wait_for(reader.readexactly(7), 2)
                tid, _, length, unit = struct.unpack(">HHHB", head)
                answers[tid] = (unit, await reader.readexactly(length - 1))
            assert list(answers) == [12, 11]  # the fast one first
            assert answers[11][0] == 1 and answers[12][0] == 2
            assert list(struct.unpack(">HH", answers[11][1][2:])) == lamp_dev.read(Table.INPUT,
                                                                                    0, 2)
            assert list(struct.unpack(">HH", answers[12][1][2:])) == env_dev.read(Table.HOLDING,
                                                                                   0, 2)
        finally:
            writer.close()
            await ep.stop()

    asyncio.run(main())


@pytest.mark.timeout(30)
def test_endpoint_faults_refuse_reset_stall(make: DeviceMaker) -> None:
    async def body(ep: TcpEndpoint, client: AsyncModbusTcpClient) -> None:
        port = ep.port
        await ep.set_fault(EndpointFault.STALL)
        with pytest.raises(PmModbusException):
            await client.read_input_registers(0, count=1, device_id=1)
        await ep.set_fault(EndpointFault.NONE)
        client.close()

        await ep.set_fault(EndpointFault.RESET)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(mbap(1, 1, 4, 0, 1))
        with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)) as exc:
            await asyncio.wait_for(reader.readexactly(7), 2)
        assert isinstance(exc.value, ConnectionResetError)
        writer.close()

        await ep.set_fault(EndpointFault.REFUSE)
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)
        await ep.set_fault(EndpointFault.NONE)
        assert ep.port == port
        assert await client.connect()
        rr = await client.read_input_registers(0, count=1, device_id=1)
        assert not rr.isError()

    serve(make, body)


def parse_mbpoll(out: str) -> dict[int, str]:
    return {int(m.group(1)): m.group(2) for m in re.finditer(r"^\[(\d+)\]:\s+(\S+)", out, re.M)}


async def mbpoll(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        "mbpoll", "-m", "tcp", "-1", "-o", "2", *args, "127.0.0.1",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 10)
    assert proc.returncode == 0, err.decode()
    return out.decode()


@pytest.mark.timeout(30)
@pytest.mark.skipif(shutil.which("mbpoll") is None, reason="mbpoll not installed")
def test_mbpoll_reads_what_the_profile_encodes(make: DeviceMaker) -> None:
    async def main() -> None:
        lamp_dev = make("street_lamp", "lamp-01", 1)
        meter = make("water_meter", "meter-01", 3)
        ep = TcpEndpoint("gw", [lamp_dev, meter])
        port = str(await ep.start())
        try:
            lamp_dev.model.trigger("tilt", 600)
            meter.model.trigger("reverse", 600)  # negative flow
            make.clock.advance(60)
            # 1-based references: input register 0 is reference 1
            regs = parse_mbpoll(await mbpoll("-p", port, "-a", "1", "-t", "3", "-r", "1",
                                             "-c", "10"))
            assert [int(regs[i]) & 0xFFFF for i in range(1, 11)] == lamp_dev.read(
                Table.INPUT, 0, 10)
            assert int(regs[3]) == round(float(lamp_dev.snapshot()["power"] or 0) * 10)
            # mbpoll's float default is low word first: the meter's CDAB flow_rate as it is
            flows = parse_mbpoll(await mbpoll("-p", port, "-a", "3", "-t", "3:float", "-r", "3",
                                              "-c", "1"))
            flow = meter.snapshot()["flow_rate"]
            assert isinstance(flow, float) and flow < 0
            assert float(flows[3]) == pytest.approx(flow, abs=1e-4)
            hold = parse_mbpoll(await mbpoll("-p", port, "-a", "1", "-t", "4", "-r", "1",
                                             "-c", "2"))
            assert int(hold[1]) == lamp_dev.snapshot()["dimming"]
        finally:
            await ep.stop()

    asyncio.run(main())
