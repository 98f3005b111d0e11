"""Every device fault of the simulated RS-485 line, as third-party masters see it.

pymodbus 3.16's ``ModbusSerialClient`` (framer RTU, retries=0, short timeout) and ``mbpoll -m rtu``
talk to ``simulators.transports.rtu_line.RtuLine`` over its real pty. What each one reports:

| fault                | pymodbus                                        | mbpoll (stderr, exit 1) |
|----------------------|-------------------------------------------------|-------------------------|
| DEAD                 | ModbusIOException after its timeout, no bytes   | Connection timed out    |
| SLOW (< timeout)     | the values, late                                | the values, late        |
| SLOW (> timeout)     | ModbusIOException; late answer discarded later  | Connection timed out    |
| EXCEPTION 2 / 3 / 6  | ExceptionResponse with that code                | Illegal data addr., ... |
| BAD_CRC              | ModbusIOException, logs "CRC check failed"      | Invalid CRC             |
| TRUNCATED            | ModbusIOException, logs "Frame - not ready"     | Connection timed out    |
| GARBAGE              | ModbusIOException, logs the garbage, CRC failed | Invalid CRC             |
| STUCK / OUT_OF_RANGE | valid frames: frozen / out-of-range values      | same values (exit 0)    |
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest
from pymodbus.client import ModbusSerialClient
from pymodbus.exceptions import ModbusIOException
from pymodbus.pdu import ExceptionResponse

from edge_agent.profiles import codec
from edge_agent.profiles.model import ModbusPoint, Table
from simulators.clock import SimClock
from simulators.devices.profile_device import ProfileDevice
from simulators.faults import DeviceFault
from simulators.transports.rtu_line import RtuLine

from .conftest import LAMP_UNIT

TIMEOUT_S = 1.0  # generous: under load pymodbus may not poll its port again before a short one
MBPOLL = shutil.which("mbpoll")
needs_mbpoll = pytest.mark.skipif(
    MBPOLL is None, reason="mbpoll not installed (apt-get install mbpoll)"
)


@pytest.fixture
def client(line: RtuLine) -> Iterator[ModbusSerialClient]:
    c = ModbusSerialClient(line.path, baudrate=9600, timeout=TIMEOUT_S, retries=0)
    assert c.connect()
    yield c
    c.close()  # type: ignore[no-untyped-call]


@pytest.fixture
def pymodbus_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="pymodbus.logging")
    return caplog


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("pymodbus")]


def read_inputs(c: ModbusSerialClient, count: int = 10) -> list[int]:
    rr = c.read_input_registers(0, count=count, device_id=LAMP_UNIT)
    assert not rr.isError(), rr
    return list(rr.registers)


def decoded(lamp: ProfileDevice, regs: list[int], table: Table) -> dict[str, object]:
    """Engineering values of the points that lie wholly in ``regs`` (read from address 0)."""
    out: dict[str, object] = {}
    for p in lamp.profile.modbus_points:
        if p.table is table and p.end <= len(regs):
            out[p.name] = codec.decode(p, regs[p.address : p.end])
    return out


# --- pymodbus -----------------------------------------------------------------------------------


NO_ANSWER = [
    (DeviceFault.DEAD, None),
    (DeviceFault.BAD_CRC, "Frame CRC check failed"),
    (DeviceFault.TRUNCATED, "Frame - not ready"),
    (DeviceFault.GARBAGE, "Processing: 0x0 0xff 0x13 0x37 0x1 0x4"),
]


@pytest.mark.timeout(20)
@pytest.mark.parametrize(("fault", "log_says"), NO_ANSWER, ids=[f.value for f, _ in NO_ANSWER])
def test_pymodbus_gets_no_usable_answer(
    fault: DeviceFault, log_says: str | None, line: RtuLine, lamp: ProfileDevice,
    client: ModbusSerialClient, pymodbus_log: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    good = read_inputs(client)
    assert good == lamp.read(Table.INPUT, 0, 10)
    pymodbus_log.clear()
    lamp.faults.kind = fault
    t0 = time.perf_counter()
    with pytest.raises(ModbusIOException, match="No response received"):
        client.read_input_registers(0, count=10, device_id=LAMP_UNIT)
    assert time.perf_counter() - t0 >= TIMEOUT_S  # it waited its whole timeout out
    logged = messages(pymodbus_log)
    received = [m for m in logged if m.startswith("Processing:")]
    if log_says is None:
        assert received == [], logged  # DEAD: not one byte came back
        assert line.stats.per_unit[LAMP_UNIT].unanswered == 1
    else:
        assert any(log_says in m for m in logged), logged
        assert line.stats.per_unit[LAMP_UNIT].responses == 2  # the bad answer was on the wire
    lamp.faults.clear()
    assert read_inputs(client) == good  # the client resynchronises on the next request


@pytest.mark.timeout(20)
def test_pymodbus_slow_answer_in_and_beyond_the_timeout(
    lamp: ProfileDevice, client: ModbusSerialClient, pymodbus_log: pytest.LogCaptureFixture
) -> None:
    good = read_inputs(client)
    lamp.faults.kind = DeviceFault.SLOW
    lamp.faults.slow_s = TIMEOUT_S / 2
    t0 = time.perf_counter()
    assert read_inputs(client) == good
    assert time.perf_counter() - t0 >= TIMEOUT_S / 2

    lamp.faults.slow_s = TIMEOUT_S * 2
    with pytest.raises(ModbusIOException, match="No response received"):
        client.read_input_registers(0, count=10, device_id=LAMP_UNIT)
    lamp.faults.clear()
    time.sleep(TIMEOUT_S * 1.5)  # the late answer lands in the receive buffer
    pymodbus_log.clear()
    rr = client.read_holding_registers(0, count=2, device_id=LAMP_UNIT)
    assert list(rr.registers) == lamp.read(Table.HOLDING, 0, 2)  # not the stale input answer
    assert any(m.startswith("Cleanup recv buffer before send") for m in messages(pymodbus_log))


@pytest.mark.timeout(20)
@pytest.mark.parametrize("code", [2, 3, 6])
def test_pymodbus_exception_response_carries_the_code(
    code: int, line: RtuLine, lamp: ProfileDevice, client: ModbusSerialClient
) -> None:
    lamp.faults.kind = DeviceFault.EXCEPTION
    lamp.faults.exception_code = code
    rr = client.read_input_registers(0, count=2, device_id=LAMP_UNIT)
    assert isinstance(rr, ExceptionResponse) and rr.isError()
    assert (rr.function_code, rr.exception_code) == (0x84, code)
    wr = client.write_register(0, 40, device_id=LAMP_UNIT)
    assert isinstance(wr, ExceptionResponse)
    assert (wr.function_code, wr.exception_code) == (0x86, code)
    assert lamp.snapshot()["dimming"] != 40  # refused, not applied
    assert line.stats.per_unit[LAMP_UNIT].exceptions == 2
    lamp.faults.clear()
    assert not client.write_register(0, 40, device_id=LAMP_UNIT).isError()
    assert lamp.snapshot()["dimming"] == 40


@pytest.mark.timeout(20)
def test_pymodbus_stuck_values_do_not_move(
    clock: SimClock, lamp: ProfileDevice, client: ModbusSerialClient
) -> None:
    lamp.faults.kind = DeviceFault.STUCK
    before = read_inputs(client)  # the registers freeze at the first read under the fault
    for _ in range(2):
        clock.advance(3600)  # voltage, tilt, cabinet temperature all move in an hour
        assert read_inputs(client) == before
    lamp.faults.clear()
    moved = read_inputs(client)
    assert moved != before and moved == lamp.read(Table.INPUT, 0, 10)


@pytest.mark.timeout(20)
def test_pymodbus_out_of_range_values_decode_outside_the_physical_range(
    lamp: ProfileDevice, client: ModbusSerialClient
) -> None:
    normal = decoded(lamp, read_inputs(client), Table.INPUT)
    ranges = lamp.model.ranges
    lamp.faults.kind = DeviceFault.OUT_OF_RANGE
    bad = decoded(lamp, read_inputs(client), Table.INPUT)
    holding = client.read_holding_registers(0, count=1, device_id=LAMP_UNIT)
    checked = 0
    for name, value in bad.items():
        if name in ranges:
            lo, hi = ranges[name]
            assert isinstance(value, float) and not lo <= value <= hi, (name, value)
            assert lo <= float(normal[name]) <= hi, (name, normal[name])  # type: ignore[arg-type]
            checked += 1
    assert checked >= 5, bad  # voltage, current, power, tilt_angle, cabinet_temp
    assert holding.registers[0] > ranges["dimming"][1]  # dimming 200 %
    lamp.faults.clear()
    assert decoded(lamp, read_inputs(client), Table.INPUT) == normal


@pytest.mark.timeout(20)
def test_pymodbus_sees_a_reboot(
    clock: SimClock, lamp: ProfileDevice, client: ModbusSerialClient
) -> None:
    energy = lamp.profile.point("energy")
    assert isinstance(energy, ModbusPoint)
    assert not client.write_registers(0, [40, 1], device_id=LAMP_UNIT).isError()  # manual, 40 %
    assert not client.write_coil(0, True, device_id=LAMP_UNIT).isError()
    clock.advance(5 * 3600)  # 48 W for 5 h: 0.24 kWh on the volatile counter
    regs = read_inputs(client)
    assert codec.decode(energy, regs[energy.address : energy.end]) == pytest.approx(0.24, abs=0.02)
    lamp.faults.kind = DeviceFault.DEAD
    with pytest.raises(ModbusIOException):
        client.read_holding_registers(0, count=2, device_id=LAMP_UNIT)

    lamp.reboot()  # power cycle: the fault is gone, volatile state is back to defaults
    assert lamp.faults.kind is DeviceFault.NONE
    regs = read_inputs(client)
    assert regs[energy.address : energy.end] == [0, 0]
    # 17:00 in auto mode: the programme's last edge was 06:00 -> off, 100 %
    assert list(client.read_holding_registers(0, count=2, device_id=LAMP_UNIT).registers) == [
        100, 0]  # fmt: skip
    assert client.read_coils(0, count=1, device_id=LAMP_UNIT).bits[0] is False


# --- mbpoll -------------------------------------------------------------------------------------


def mbpoll(path: str, *args: str, write: tuple[str, ...] = ()) -> tuple[int, str, str]:
    """One mbpoll poll (or write) of the lamp: (exit status, stdout, stderr)."""
    assert MBPOLL is not None
    cmd = [MBPOLL, "-m", "rtu", "-b", "9600", "-P", "none", "-a", str(LAMP_UNIT), "-o",
           str(TIMEOUT_S), "-1", "-0", *args, path, *write]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    return done.returncode, done.stdout, done.stderr


def mb_values(out: str) -> list[int]:
    return [int(m[2]) for m in re.finditer(r"^\[(\d+)\]:\s+(-?\d+)", out, re.M)]


MB_FAILS = [
    (DeviceFault.DEAD, 6, "Connection timed out"),
    (DeviceFault.SLOW, 6, "Connection timed out"),  # slow_s set beyond the timeout below
    (DeviceFault.EXCEPTION, 2, "Illegal data address"),
    (DeviceFault.EXCEPTION, 3, "Illegal data value"),
    (DeviceFault.EXCEPTION, 6, "Slave device or server is busy"),
    (DeviceFault.BAD_CRC, 6, "Invalid CRC"),
    (DeviceFault.TRUNCATED, 6, "Connection timed out"),
    (DeviceFault.GARBAGE, 6, "Invalid CRC"),
]


@needs_mbpoll
@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    ("fault", "code", "says"), MB_FAILS, ids=[f"{f.value}-{c}" for f, c, _ in MB_FAILS]
)
def test_mbpoll_reports_the_failure(
    fault: DeviceFault, code: int, says: str, line: RtuLine, lamp: ProfileDevice
) -> None:
    rc, out, err = mbpoll(line.path, "-t", "3", "-r", "0", "-c", "2")
    assert rc == 0 and mb_values(out) == lamp.read(Table.INPUT, 0, 2), err
    lamp.faults.kind = fault
    lamp.faults.exception_code = code
    lamp.faults.slow_s = TIMEOUT_S * 2
    rc, out, err = mbpoll(line.path, "-t", "3", "-r", "0", "-c", "2")
    assert rc == 1 and f"Read input register failed: {says}" in err, (rc, out, err)
    assert mb_values(out) == []


@needs_mbpoll
@pytest.mark.timeout(20)
def test_mbpoll_slow_within_timeout_reads_late(line: RtuLine, lamp: ProfileDevice) -> None:
    lamp.faults.kind = DeviceFault.SLOW
    lamp.faults.slow_s = TIMEOUT_S / 2
    t0 = time.perf_counter()
    rc, out, err = mbpoll(line.path, "-t", "3", "-r", "0", "-c", "2")
    assert rc == 0 and mb_values(out) == lamp.read(Table.INPUT, 0, 2), err
    assert time.perf_counter() - t0 >= TIMEOUT_S / 2


@needs_mbpoll
@pytest.mark.timeout(20)
def test_mbpoll_stuck_and_out_of_range_values(
    clock: SimClock, line: RtuLine, lamp: ProfileDevice
) -> None:
    def inputs() -> list[int]:
        rc, out, err = mbpoll(line.path, "-t", "3", "-r", "0", "-c", "10")
        assert rc == 0, err
        return mb_values(out)

    lamp.faults.kind = DeviceFault.STUCK
    before = inputs()
    clock.advance(3 * 3600)
    assert inputs() == before
    lamp.faults.kind = DeviceFault.OUT_OF_RANGE
    bad = decoded(lamp, inputs(), Table.INPUT)
    lo, hi = lamp.model.ranges["voltage"]
    assert not lo <= float(bad["voltage"]) <= hi  # type: ignore[arg-type]
    lamp.faults.clear()
    after = inputs()
    assert after != before and after == lamp.read(Table.INPUT, 0, 10)


@needs_mbpoll
@pytest.mark.timeout(20)
def test_mbpoll_after_a_reboot(line: RtuLine, lamp: ProfileDevice) -> None:
    rc, _, err = mbpoll(line.path, "-t", "4", "-r", "0", write=("40", "1"))  # 40 %, manual
    assert rc == 0, err
    assert lamp.read(Table.HOLDING, 0, 2) == [40, 1]
    lamp.faults.kind = DeviceFault.DEAD
    assert mbpoll(line.path, "-t", "4", "-r", "0", "-c", "2")[0] == 1
    lamp.reboot()
    rc, out, err = mbpoll(line.path, "-t", "4", "-r", "0", "-c", "2")
    assert rc == 0 and mb_values(out) == [100, 0], (out, err)
