"""End to end on CPython: the node code runs unchanged in a thread behind the ``machine`` shim,
its UART on a pty; the gateway's own RTU master (SerialRtuBus) reads the other end, and the
profile codec decodes what the sensor hooks produced."""

from __future__ import annotations

import asyncio
import math
import os
import re
import select
import shutil
import subprocess
import termios
import time
import tty
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from edge_agent.bus.serial_line import SerialRtuBus
from edge_agent.config.model import SerialBus
from edge_agent.errors import ModbusException
from edge_agent.profiles import codec
from edge_agent.profiles.load import load_profile
from edge_agent.profiles.model import ModbusPoint, Profile, Table
from firmware_bridge import gen
from tests.firmware.conftest import PROFILES, NodeLoader, NodeThread
from tests.firmware.shim import machine

T = TypeVar("T")
BAUD = 115200
UNIT = 7
WATER = load_profile(PROFILES / "water_meter.toml")


def mp(profile: Profile, name: str) -> ModbusPoint:
    p = profile.point(name)
    assert isinstance(p, ModbusPoint)
    return p


def gateway(path: str, body: Callable[[SerialRtuBus], Awaitable[T]]) -> T:
    async def main() -> T:
        bus = SerialRtuBus(SerialBus(name="rs485-node", port=path, baud=BAUD, timeout_max_s=0.5))
        try:
            return await body(bus)
        finally:
            await bus.close()

    return asyncio.run(main())


def wait_for(cond: Callable[[], bool], what: str, timeout: float = 3.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


async def read_point(bus: SerialRtuBus, p: ModbusPoint) -> Any:
    regs = await bus.read(UNIT, p.table, p.address, p.count, timeout_s=1.0)
    return codec.decode(p, regs)


@pytest.mark.timeout(30)
def test_gateway_reads_what_the_sensor_hooks_produced(
    node_env: NodeLoader, run_node: Callable[[Any], NodeThread]
) -> None:
    path = machine.attach_pty(0)
    mods = node_env()
    node = mods.main.build(uart_id=0, unit=UNIT, baud=BAUD, wdt_ms=2000)
    machine.set_adc(26, 40000)
    machine.pins[16].value(0)  # tamper switch closed (active low)
    machine.pins[17].value(1)
    for _ in range(25):  # 25 one-litre pulses before the node starts
        machine.pins[15].value(1)
        machine.pins[15].value(0)
    runner = run_node(node)
    sensors = {"totalizer", "flow_rate", "battery", "tamper", "leak", "reverse_flow",
               "serial_number"}
    wait_for(lambda: set(node.last) >= sensors, "first samples")
    produced = dict(node.last)

    async def body(bus: SerialRtuBus) -> dict[str, Any]:
        got = {p.name: await read_point(bus, p) for p in WATER.modbus_points}
        await bus.write(UNIT, Table.COIL, 0, codec.encode(mp(WATER, "valve"), False),
                        timeout_s=1.0)
        got["valve_after"] = await read_point(bus, mp(WATER, "valve"))
        return got

    got = gateway(path, body)
    assert produced["totalizer"] == pytest.approx(0.025) and produced["battery"] == 61
    assert produced["tamper"] is True and produced["leak"] is False
    for name in sensors:
        want = produced[name]
        if isinstance(want, float):
            assert math.isclose(got[name], want, rel_tol=1e-6), (name, got[name], want)
        else:
            assert got[name] == want, name
    assert len(got["serial_number"]) == 12
    assert got["valve"] is True and got["valve_after"] is False
    assert machine.pins[18].value() == 0  # the actuator hook drove the valve pin
    runner.stop()
    slave = node.slave
    answers = slave.stats[0] + slave.stats[3]
    assert slave.stats[0] == len(WATER.modbus_points) + 2 and slave.stats[1] == 0
    de = machine.pins[2].history
    k = len(de) - 2 * answers  # driver enabled only while answering
    assert k >= 1 and set(de[:k]) == {0} and de[k:] == [1, 0] * answers
    assert machine.watchdogs[0].feeds > 0


def _node_with(
    mods: Any, profile_name: str, tmp_path: Path, baud: int = BAUD
) -> tuple[Any, Any, str]:
    """A bare node (no hooks) for ``profile_name``'s generated map."""
    mapdir = tmp_path / "map"
    mapdir.mkdir()
    gen.write(PROFILES / f"{profile_name}.toml", mapdir / "device_map.py")
    path = machine.attach_pty(0)
    m = mods(mapdir)
    dm = m.device_map
    regs = m.regmap.RegisterMap(dm.POINTS, dm.TABLES, dm.STRICT)
    uart = machine.UART(0, baudrate=baud)
    slave = m.modbus_slave.RtuSlave(uart, UNIT, regs, baud, machine.Pin(2, machine.Pin.OUT))
    return m.node.Node(slave, machine.WDT(timeout=2000)), regs, path


@pytest.mark.timeout(30)
def test_exception_answers(
    node_env: NodeLoader, run_node: Callable[[Any], NodeThread], tmp_path: Path
) -> None:
    node, _, path = _node_with(node_env, "manhole_cover", tmp_path)
    prof = load_profile(PROFILES / "manhole_cover.toml")
    calls = {"n": 0}

    def flaky() -> float:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError("i2c nack")
        return 12.5

    node.sensor("ch4", flaky, 150)
    node.sensor("h2s", lambda: 3.2, 1000)
    run_node(node)
    wait_for(lambda: node.failures == 1, "the first ch4 failure")

    async def body(bus: SerialRtuBus) -> list[int | list[int]]:
        out: list[int | list[int]] = []
        for table, addr, count in [
            (Table.INPUT, 0, 4),  # ch4 (address 3) failed: 04
            (Table.INPUT, 0, 5),  # address 4 unmapped on a max_gap = 0 device: 02
            (Table.INPUT, 8, 2),  # past the end: 02
            (Table.HOLDING, 0, 1),  # no holding registers: 02
            (Table.INPUT, 5, 1),
        ]:
            try:
                out.append(await bus.read(UNIT, table, addr, count, timeout_s=1.0))
            except ModbusException as exc:
                out.append(exc.code)
        await asyncio.sleep(0.3)  # ch4 sampled again, successfully
        out.append(await bus.read(UNIT, Table.INPUT, 0, 4, timeout_s=1.0))
        try:
            await bus.write(UNIT, Table.COIL, 0, [1], timeout_s=1.0)
        except ModbusException as exc:
            out.append(exc.code)
        return out

    got = gateway(path, body)
    assert got[:4] == [4, 2, 2, 2]
    assert got[4] == codec.encode(mp(prof, "h2s"), 3.2)
    ch4_regs = got[5]
    assert isinstance(ch4_regs, list)
    assert codec.decode(mp(prof, "ch4"), ch4_regs[3:4]) == 12.5
    assert got[6] == 2
    assert node.slave.stats[3] == 5


@pytest.mark.timeout(30)
def test_framing_by_silence_crc_broadcast_and_bad_requests(
    node_env: NodeLoader, run_node: Callable[[Any], NodeThread], tmp_path: Path
) -> None:
    import serial

    from edge_agent.bus.crc import with_crc

    node, regs, path = _node_with(node_env, "street_lamp", tmp_path)
    run_node(node)
    t35 = node.slave.t35_us / 1e6
    with serial.Serial(path, BAUD, timeout=0.25) as port:

        def ask(frame: bytes, answer_len: int) -> bytes:
            port.reset_input_buffer()
            port.write(frame)
            data = port.read(answer_len) if answer_len else port.read(1)
            time.sleep(3 * t35)
            return data

        assert ask(with_crc(bytes([UNIT, 0x2B, 0x0E, 1, 0])), 5)[:3] == bytes([UNIT, 0xAB, 1])
        assert ask(with_crc(bytes([UNIT, 3, 0, 0, 0, 0])), 5)[:3] == bytes([UNIT, 0x83, 3])
        assert ask(with_crc(bytes([UNIT, 5, 0, 0, 0x12, 0x34])), 5)[:3] == bytes([UNIT, 0x85, 3])
        good = with_crc(bytes([UNIT, 5, 0, 0, 0xFF, 0]))
        assert ask(good[:-1] + bytes([good[-1] ^ 1]), 0) == b""  # bad CRC: silence
        assert ask(with_crc(bytes([UNIT + 1, 1, 0, 0, 0, 1])), 0) == b""  # other unit: silence
        assert regs.get("lamp_on") is False
        # back to back (no t3.5 between them): cut by content; the master gave up on the first
        # (applied, not answered), the second is answered
        assert ask(good + good, 8) == good
        assert regs.get("lamp_on") is True and node.slave.stats[5] == 1  # late
        off = with_crc(bytes([0, 5, 0, 0, 0, 0]))
        assert ask(off, 0) == b""  # broadcast: applied, silent
        wait_for(lambda: regs.get("lamp_on") is False, "broadcast write applied")
        assert ask(good, 8) == good  # echo
        reply = ask(with_crc(bytes([UNIT, 1, 0, 0, 0, 1])), 6)
        assert reply == with_crc(bytes([UNIT, 1, 1, 1]))
    stats = node.slave.stats
    assert stats[1] == 1 and stats[2] == 1  # crc errors, other unit


@pytest.mark.timeout(30)
def test_a_hung_sensor_starves_the_watchdog(
    node_env: NodeLoader, run_node: Callable[[Any], NodeThread], tmp_path: Path
) -> None:
    node, regs, _ = _node_with(node_env, "pipe_pressure", tmp_path)
    node.wdt = machine.WDT(timeout=50)
    ticks = {"n": 0}

    def pressure() -> float:
        ticks["n"] += 1
        if ticks["n"] == 3:
            time.sleep(0.2)  # the I2C bus hangs
        return 4.5

    node.sensor("pressure", pressure, 10)
    runner = run_node(node)
    runner.join(5)
    assert not runner.alive()
    with pytest.raises(machine.WatchdogExpired):
        runner.stop()
    assert regs.get("pressure") == 4.5


@pytest.mark.timeout(30)
def test_frame_ends_after_t35_of_silence_and_the_answer_waits_for_it(
    node_env: NodeLoader, run_node: Callable[[Any], NodeThread], tmp_path: Path
) -> None:
    """At 1200 baud 8N1 t3.5 is 29 ms: a pause of a few ms inside a request is not an end of frame,
    a pause of 100 ms is; the answer starts no earlier than t3.5 after the request."""
    import serial

    from edge_agent.bus.crc import with_crc

    node, _, path = _node_with(node_env, "street_lamp", tmp_path, baud=1200)
    t35 = node.slave.t35_us / 1e6
    assert 0.029 < t35 < 0.030
    run_node(node)
    req = with_crc(bytes([UNIT, 1, 0, 0, 0, 1]))
    with serial.Serial(path, 1200, timeout=1.0) as port:
        port.write(req[:3])
        time.sleep(0.004)
        port.write(req[3:])
        sent = time.monotonic()
        assert port.read(6) == with_crc(bytes([UNIT, 1, 1, 0]))
        assert time.monotonic() - sent >= t35
        time.sleep(2 * t35)  # a master keeps the silent interval after an answer, too
        port.write(req[:3])
        time.sleep(0.1)
        port.write(req[3:])
        port.timeout = 0.3
        assert port.read(1) == b""
    assert node.slave.stats[1] == 2  # both fragments failed their CRC


@pytest.mark.timeout(30)
@pytest.mark.skipif(shutil.which("mbpoll") is None, reason="mbpoll not installed")
def test_mbpoll_an_independent_master_reads_the_same_registers(
    node_env: NodeLoader, run_node: Callable[[Any], NodeThread]
) -> None:
    path = machine.attach_pty(0)
    mods = node_env()
    node = mods.main.build(uart_id=0, unit=UNIT, baud=9600, wdt_ms=2000)
    machine.set_adc(26, 12345)
    run_node(node)
    wait_for(lambda: "serial_number" in node.last and "battery" in node.last, "first samples")
    cmd = ["mbpoll", "-m", "rtu", "-a", str(UNIT), "-b", "9600", "-P", "none", "-0", "-1",
           "-t", "3", "-r", "0", "-c", "16", path]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    regs = {int(m[1]): int(m[2]) for m in re.finditer(r"^\[(\d+)\]:\s+(-?\d+)$", res.stdout,
                                                       re.MULTILINE)}
    assert sorted(regs) == list(range(16))
    rm = node.map
    for p in WATER.modbus_points:
        if p.table is Table.INPUT and p.name not in ("flow_rate", "totalizer"):
            assert [regs[a] for a in range(p.address, p.end)] == rm.regs(p.name), p.name
    assert codec.decode(mp(WATER, "battery"), [regs[4]]) == 12345 * 100 // 65535
    assert codec.decode(mp(WATER, "serial_number"), [regs[a] for a in range(10, 16)]) == (
        node.last["serial_number"])


def _echoing_master(path: str) -> int:
    """Open the gateway end raw but with ECHO on: what the node sends comes back to it, as on
    an RS-485 transceiver whose receiver is never disabled."""
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    tty.setraw(fd)
    attrs = termios.tcgetattr(fd)
    attrs[3] = (attrs[3] | termios.ECHO) & ~termios.ECHOCTL  # echo bytes as they are
    termios.tcsetattr(fd, termios.TCSANOW, attrs)
    return fd


def _read_for(fd: int, seconds: float) -> bytes:
    out = b""
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        if select.select([fd], [], [], left)[0]:
            out += os.read(fd, 256)
    return out


@pytest.mark.timeout(30)
@pytest.mark.parametrize("echo", [True, False])
def test_echo_of_the_own_answer_is_dropped(
    node_env: NodeLoader, run_node: Callable[[Any], NodeThread], tmp_path: Path, echo: bool
) -> None:
    from edge_agent.bus.crc import with_crc

    node, _, path = _node_with(node_env, "street_lamp", tmp_path)
    node.slave.echo = echo
    fd = _echoing_master(path)
    try:
        run_node(node)
        os.write(fd, with_crc(bytes([UNIT, 1, 0, 0, 0, 1])))
        data = _read_for(fd, 0.3)
    finally:
        os.close(fd)
    answer = with_crc(bytes([UNIT, 1, 1, 0]))
    assert data.startswith(answer)
    assert data == answer and node.slave.stats[3] == 0, (data, node.slave.stats)
    if echo:  # read back right after sending (or, if the pty's echo came later than a
        # transceiver's would, dropped by its form like below)
        assert node.slave.stats[2] <= 1, node.slave.stats
    else:  # without: it comes in as a frame of our unit id in an answer's form, and is dropped
        assert node.slave.stats[2] == 1, node.slave.stats


@pytest.mark.timeout(30)
def test_frames_glued_while_the_loop_was_busy_are_cut_by_content(
    node_env: NodeLoader, run_node: Callable[[Any], NodeThread], tmp_path: Path
) -> None:
    """A sensor hook keeps the loop away for 60 ms while another unit's request and answer and
    then the request to us come in t3.5 apart: readinto returns them glued; the node still
    drops the first two and answers the third. Noise in front of a request is dropped once the
    line is quiet and the request behind it is still served."""
    import serial

    from edge_agent.bus.crc import with_crc

    node, _, path = _node_with(node_env, "street_lamp", tmp_path)
    busy = {"on": False}

    def slow_sensor() -> float:
        if busy["on"]:
            time.sleep(0.06)  # an I2C sensor taking its time
        return 21.5

    node.sensor("cabinet_temp", slow_sensor, 1)
    run_node(node)
    t35 = node.slave.t35_us / 1e6
    other_req = with_crc(bytes([UNIT + 3, 3, 0, 0, 0, 2]))
    other_ans = with_crc(bytes([UNIT + 3, 3, 4, 1, 2, 3, 4]))
    ours = with_crc(bytes([UNIT, 1, 0, 0, 0, 1]))
    want = with_crc(bytes([UNIT, 1, 1, 0]))
    with serial.Serial(path, BAUD, timeout=1.0) as port:
        busy["on"] = True
        time.sleep(0.01)  # the node is now inside the slow hook
        for frame in (other_req, other_ans, ours):
            port.write(frame)
            port.flush()
            time.sleep(len(frame) * 10 / BAUD + t35)  # on the wire, then t3.5 of silence
        assert port.read(len(want)) == want
        busy["on"] = False
        time.sleep(3 * t35)
        port.write(b"\x00\xff\x13" + ours)  # noise glued in front
        assert port.read(len(want)) == want
    stats = node.slave.stats
    assert stats[2] == 2 and stats[1] == 1 and stats[5] == 0, stats  # other unit x2, noise
