"""Third-party masters against the simulated line: pymodbus' serial clients (framer RTU), mbpoll."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess

import pytest
from pymodbus.client import AsyncModbusSerialClient, ModbusSerialClient

from edge_agent.profiles import codec
from edge_agent.profiles.model import Table
from simulators.devices.profile_device import ProfileDevice
from simulators.transports.rtu_line import RtuLine

from .conftest import ENV_UNIT, LAMP_UNIT


@pytest.mark.timeout(30)
def test_pymodbus_async_client_back_to_back_is_caught(lamp: ProfileDevice) -> None:
    expected = lamp.read(Table.INPUT, 0, 10)
    # 2400 baud: t3.5 = 14.6 ms, so only the client's behaviour, not machine load, decides
    slow_line = RtuLine([lamp], baud=2400)

    async def poll() -> list[list[int]]:
        client = AsyncModbusSerialClient(slow_line.path, baudrate=2400, timeout=2, retries=0)
        try:
            assert await client.connect()
            out = []
            for _ in range(6):
                rr = await client.read_input_registers(0, count=10, device_id=LAMP_UNIT)
                assert not rr.isError()
                out.append(list(rr.registers))
            return out
        finally:
            client.close()

    slow_line.start()
    try:
        assert asyncio.run(poll()) == [expected] * 6
    finally:
        slow_line.stop()
    found = slow_line.violations
    # pymodbus' asyncio client sends the next request as soon as the answer is parsed
    assert len(found) >= 4, [round(v.gap_s * 1e3, 3) for v in found]  # 5 possible
    assert all(v.gap_s < v.required_s for v in found)


@pytest.mark.timeout(30)
def test_pymodbus_sync_client_reads_and_writes(line: RtuLine, lamp: ProfileDevice) -> None:
    client = ModbusSerialClient(line.path, baudrate=9600, timeout=1, retries=0)
    try:
        assert client.connect()
        rr = client.read_input_registers(0, count=10, device_id=LAMP_UNIT)
        assert not rr.isError() and list(rr.registers) == lamp.read(Table.INPUT, 0, 10)
        assert not client.write_register(0, 33, device_id=LAMP_UNIT).isError()
        assert not client.write_coil(0, True, device_id=LAMP_UNIT).isError()
        rr = client.read_holding_registers(0, count=2, device_id=LAMP_UNIT)
        assert list(rr.registers) == [33, lamp.read(Table.HOLDING, 1, 1)[0]]
        assert client.read_coils(0, count=1, device_id=LAMP_UNIT).bits[0] is True
    finally:
        client.close()  # type: ignore[no-untyped-call]
    # measured: the sync client polls in_waiting every 4 character times and only returns once
    # the count stopped growing, so its next request comes >= 4 chars after the answer (> t3.5)
    assert line.violations == []
    assert lamp.snapshot()["dimming"] == 33 and lamp.snapshot()["lamp_on"] is True


MBPOLL = shutil.which("mbpoll")


def mbpoll(path: str, unit: int, *args: str, write: tuple[str, ...] = ()) -> str:
    assert MBPOLL is not None
    cmd = [MBPOLL, "-m", "rtu", "-b", "9600", "-P", "none", "-a", str(unit), "-o", "1", "-1",
           *args, path, *write]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.skipif(MBPOLL is None, reason="mbpoll not installed (apt-get install mbpoll)")
@pytest.mark.timeout(30)
def test_mbpoll_reads_the_profile_encoding(line: RtuLine, env: ProfileDevice) -> None:
    out = mbpoll(line.path, ENV_UNIT, "-t", "4", "-r", "1", "-c", "10")  # 1-based: holding 0..9
    got = {int(m[1]) - 1: int(m[2]) & 0xFFFF for m in re.finditer(r"^\[(\d+)\]:\s+(-?\d+)", out,
                                                                   re.M)}
    assert sorted(got) == list(range(10))
    values = env.snapshot()
    checked = 0
    for p in env.profile.modbus_points:
        if p.table is Table.HOLDING and p.end <= 10:
            assert [got[a] for a in range(p.address, p.end)] == codec.encode(p, values[p.name]), p
            checked += 1
    assert checked >= 3


@pytest.mark.skipif(MBPOLL is None, reason="mbpoll not installed (apt-get install mbpoll)")
@pytest.mark.timeout(30)
def test_mbpoll_writes_and_reads_zero_based(line: RtuLine, lamp: ProfileDevice) -> None:
    mbpoll(line.path, LAMP_UNIT, "-t", "4", "-0", "-r", "0", write=("55",))
    assert lamp.snapshot()["dimming"] == 55
    out = mbpoll(line.path, LAMP_UNIT, "-t", "3", "-0", "-r", "0", "-c", "1")
    voltage = int(re.findall(r"^\[0\]:\s+(\d+)", out, re.M)[0])
    point = lamp.profile.point("voltage")
    assert [voltage] == codec.encode(point, lamp.snapshot()["voltage"])  # type: ignore[arg-type]
    assert line.stats.per_unit[LAMP_UNIT].responses == 2
