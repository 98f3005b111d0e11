"""The simulated RS-485 line over a real pty, driven with pyserial as a raw Modbus master."""

from __future__ import annotations

import time

import pytest
import serial

from edge_agent.bus.crc import crc_ok, with_crc
from edge_agent.profiles.model import Table
from simulators.devices.profile_device import ProfileDevice
from simulators.faults import DeviceFault
from simulators.transports.rtu_line import RtuLine

from .conftest import ENV_UNIT, LAMP_UNIT, transact

CHAR_9600 = 10 / 9600


def req(unit: int, fc: int, addr: int, word: int) -> bytes:
    return with_crc(bytes((unit, fc)) + addr.to_bytes(2, "big") + word.to_bytes(2, "big"))


def regs(frame: bytes) -> list[int]:
    body = frame[3:-2]
    return [int.from_bytes(body[i : i + 2], "big") for i in range(0, len(body), 2)]


@pytest.mark.timeout(20)
def test_ten_register_read_takes_wire_time(
    line: RtuLine, port: serial.Serial, lamp: ProfileDevice
) -> None:
    expected = lamp.read(Table.INPUT, 0, 10)
    floor = (8 + 25) * CHAR_9600 + line.turnaround_s
    for _ in range(3):
        answer, elapsed = transact(port, req(LAMP_UNIT, 4, 0, 10), 25)
        assert len(answer) == 25 and crc_ok(answer)
        assert answer[:3] == bytes((LAMP_UNIT, 4, 20))
        assert regs(answer) == expected
        assert elapsed >= floor, f"answer after {elapsed * 1e3:.2f} ms < physics {floor * 1e3:.2f}"
        time.sleep(0.01)
    stats = line.stats
    assert (stats.requests, stats.responses) == (3, 3)
    assert stats.per_unit[LAMP_UNIT].responses == 3
    assert stats.per_unit[ENV_UNIT].requests == 0


@pytest.mark.timeout(20)
def test_turnaround_and_baud_scale_the_answer_time(lamp: ProfileDevice) -> None:
    with RtuLine([lamp], baud=2400, parity="E", turnaround_s=0.02) as slow_line, serial.Serial(
        slow_line.path, 2400, parity="E", timeout=1.0
    ) as s:
        _, elapsed = transact(s, req(LAMP_UNIT, 3, 0, 2), 9)
    floor = (8 + 9) * 11 / 2400 + 0.02
    assert elapsed >= floor


@pytest.mark.timeout(20)
def test_master_waiting_t35_is_not_flagged(line: RtuLine, port: serial.Serial) -> None:
    for _ in range(5):
        answer, _ = transact(port, req(LAMP_UNIT, 3, 0, 2), 9)
        assert crc_ok(answer)
        time.sleep(line.timing.t35_s + 0.001)
    assert line.violations == []


@pytest.mark.timeout(20)
def test_master_sending_right_after_the_answer_is_flagged(lamp: ProfileDevice) -> None:
    # 2400 baud: t3.5 = 14.6 ms, far above this test's own reaction time even on a busy machine
    with RtuLine([lamp], baud=2400) as slow_line, serial.Serial(
        slow_line.path, 2400, timeout=1.0
    ) as s:
        for _ in range(5):
            answer, _ = transact(s, req(LAMP_UNIT, 3, 0, 2), 9)
            assert crc_ok(answer)
    found = slow_line.violations
    gaps_ms = [round(v.gap_s * 1e3, 3) for v in found]
    assert len(found) >= 3, gaps_ms  # 4 possible: the first request had nothing before it
    for v in found:
        assert v.gap_s < v.required_s == pytest.approx(3.5 * 10 / 2400)
        assert "unit=1 fc=3 addr=0 count=2" in v.frame


@pytest.mark.timeout(20)
def test_gap_after_an_unanswered_request_counts_from_its_end(
    line: RtuLine, port: serial.Serial
) -> None:
    port.write(req(99, 3, 0, 1))  # nobody has unit 99
    time.sleep(8 * CHAR_9600 + line.timing.t35_s + 0.03)  # margin: the line's read latency
    port.write(req(99, 3, 0, 1))
    time.sleep(0.05)
    assert line.violations == []
    port.write(req(99, 3, 0, 1))
    port.write(req(99, 3, 0, 1))  # while the previous request is still on the wire
    time.sleep(0.05)
    found = line.violations
    assert len(found) == 1 and found[0].gap_s < 1e-6  # back to back: no silence at all
    assert port.in_waiting == 0 and line.stats.ignored == 4


@pytest.mark.timeout(20)
def test_faults_change_the_answer(line: RtuLine, port: serial.Serial, lamp: ProfileDevice) -> None:
    good, _ = transact(port, req(LAMP_UNIT, 3, 0, 2), 9)
    assert crc_ok(good)

    lamp.faults.kind = DeviceFault.DEAD
    port.timeout = 0.15
    assert transact(port, req(LAMP_UNIT, 3, 0, 2), 9)[0] == b""
    assert line.stats.per_unit[LAMP_UNIT].unanswered == 1

    port.timeout = 1.0
    lamp.faults.kind = DeviceFault.SLOW
    lamp.faults.slow_s = 0.2
    answer, elapsed = transact(port, req(LAMP_UNIT, 3, 0, 2), 9)
    assert answer == good and elapsed >= 0.2 + 17 * CHAR_9600

    lamp.faults.kind = DeviceFault.EXCEPTION
    lamp.faults.exception_code = 6
    assert transact(port, req(LAMP_UNIT, 3, 0, 2), 5)[0] == with_crc(bytes((LAMP_UNIT, 0x83, 6)))

    lamp.faults.kind = DeviceFault.BAD_CRC
    answer, _ = transact(port, req(LAMP_UNIT, 3, 0, 2), 9)
    assert answer[:-2] == good[:-2] and not crc_ok(answer)

    lamp.faults.kind = DeviceFault.TRUNCATED
    port.timeout = 0.15
    answer, _ = transact(port, req(LAMP_UNIT, 3, 0, 2), 9)
    assert 0 < len(answer) < 9 and good.startswith(answer)

    port.timeout = 1.0
    lamp.faults.kind = DeviceFault.GARBAGE
    answer, _ = transact(port, req(LAMP_UNIT, 3, 0, 2), 9 + len(lamp.faults.garbage))
    assert answer == lamp.faults.garbage + good

    lamp.faults.clear()
    assert transact(port, req(LAMP_UNIT, 3, 0, 2), 9)[0] == good
    assert line.stats.per_unit[LAMP_UNIT].exceptions == 1


@pytest.mark.timeout(20)
def test_device_exception_and_bad_requests(line: RtuLine, port: serial.Serial) -> None:
    # holding 5 is not a writable register: the device refuses, the line answers exception 2
    write_ro = with_crc(bytes((LAMP_UNIT, 16, 0, 5, 0, 1, 2, 0, 1)))
    assert transact(port, write_ro, 5)[0] == with_crc(bytes((LAMP_UNIT, 0x90, 2)))
    # 126 registers is over the limit: illegal data value
    assert transact(port, req(LAMP_UNIT, 3, 0, 126), 5)[0] == with_crc(bytes((LAMP_UNIT, 0x83, 3)))
    # a function code the line does not implement, CRC valid: illegal function after t3.5
    diag = with_crc(bytes((LAMP_UNIT, 8, 0, 0, 0x12, 0x34)))
    assert transact(port, diag, 5)[0] == with_crc(bytes((LAMP_UNIT, 0x88, 1)))


@pytest.mark.timeout(20)
def test_writes_reach_the_device(port: serial.Serial, lamp: ProfileDevice) -> None:
    # fc 6: dimming (holding 0) = 40 %, echoed
    w6 = req(LAMP_UNIT, 6, 0, 40)
    assert transact(port, w6, 8)[0] == w6
    assert lamp.snapshot()["dimming"] == 40
    # fc 16: dimming 70, light_mode manual (1)
    w16 = with_crc(bytes((LAMP_UNIT, 16, 0, 0, 0, 2, 4, 0, 70, 0, 1)))
    assert transact(port, w16, 8)[0] == with_crc(bytes((LAMP_UNIT, 16, 0, 0, 0, 2)))
    assert lamp.read(Table.HOLDING, 0, 2) == [70, 1]
    # fc 5 / fc 15: lamp_on (coil 0), read back with fc 1
    for value in (0, 1):
        w5 = req(LAMP_UNIT, 5, 0, 0xFF00 if value else 0)
        assert transact(port, w5, 8)[0] == w5
        answer, _ = transact(port, req(LAMP_UNIT, 1, 0, 1), 6)
        assert answer == with_crc(bytes((LAMP_UNIT, 1, 1, value)))
    w15 = with_crc(bytes((LAMP_UNIT, 15, 0, 0, 0, 1, 1, 0)))
    assert transact(port, w15, 8)[0] == with_crc(bytes((LAMP_UNIT, 15, 0, 0, 0, 1)))
    assert lamp.read(Table.COIL, 0, 1) == [0]


@pytest.mark.timeout(20)
def test_unknown_unit_ignored_broadcast_executed_silently(
    line: RtuLine, port: serial.Serial, lamp: ProfileDevice
) -> None:
    port.timeout = 0.15
    assert transact(port, req(42, 3, 0, 1), 7)[0] == b""
    assert transact(port, req(0, 6, 0, 25), 8)[0] == b""  # broadcast: dimming 25 on every unit
    assert lamp.read(Table.HOLDING, 0, 1) == [25]
    stats = line.stats
    assert (stats.requests, stats.responses, stats.ignored, stats.broadcasts) == (2, 0, 1, 1)


@pytest.mark.timeout(20)
def test_resynchronises_after_master_garbage(line: RtuLine, port: serial.Serial) -> None:
    answer, _ = transact(port, b"\x00\x13\xff" + req(ENV_UNIT, 3, 0, 1), 7)
    assert crc_ok(answer) and answer[:3] == bytes((ENV_UNIT, 3, 2))
    # a partial frame, then silence: dropped; the next request is served normally
    port.write(req(ENV_UNIT, 3, 0, 1)[:5])
    time.sleep(0.05)
    answer, _ = transact(port, req(ENV_UNIT, 3, 0, 1), 7)
    assert crc_ok(answer)
    assert line.stats.garbage_bytes == 3 + 5


@pytest.mark.timeout(20)
def test_line_survives_the_gateway_reopening_the_port(line: RtuLine) -> None:
    for _ in range(2):
        with serial.Serial(line.path, 9600, timeout=0.5) as s:
            assert crc_ok(transact(s, req(LAMP_UNIT, 4, 0, 1), 7)[0])


def test_duplicate_unit_ids_are_refused(lamp: ProfileDevice, env: ProfileDevice) -> None:
    env.unit_id = lamp.unit_id
    with pytest.raises(ValueError, match="share unit id 1"):
        RtuLine([lamp, env])
