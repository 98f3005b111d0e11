"""The simulated NB-IoT module on a real pty, driven with pyserial like the gateway does."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest
import serial

from edge_agent.profiles.load import load_profile
from simulators.clock import SimClock
from simulators.devices.nbiot import HOME, SEARCHING, NbiotState
from simulators.faults import DeviceFault
from simulators.transports.at_modem import AtModem

from .conftest import PROFILES

FINALS = re.compile(rb"\r\n(OK|ERROR|\+CME ERROR: \d+)\r\n$")
FIXED_WALL = 1_795_000_000.0  # 2026-11-18 11:06:40 UTC


@pytest.fixture
def sim_clock() -> SimClock:
    return SimClock(speed=0.0, start_s=0.0)


@pytest.fixture
def state() -> NbiotState:
    return NbiotState(name="nb-1", seed=3)


@pytest.fixture
def modem(state: NbiotState, sim_clock: SimClock) -> Iterator[AtModem]:
    m = AtModem(state, clock=sim_clock, wall_time=lambda: FIXED_WALL)
    m.start()
    yield m
    m.stop()


@pytest.fixture
def port(modem: AtModem) -> Iterator[serial.Serial]:
    s = serial.Serial(modem.path, 9600, timeout=2.0)
    yield s
    s.close()


def read_final(port: serial.Serial, timeout_s: float = 2.0) -> bytes:
    buf = b""
    deadline = time.monotonic() + timeout_s
    while not FINALS.search(buf) and time.monotonic() < deadline:
        buf += port.read(max(1, port.in_waiting))
    return buf


def at(port: serial.Serial, cmd: str) -> bytes:
    port.write(cmd.encode() + b"\r")
    return read_final(port)


def lines(raw: bytes) -> list[str]:
    return [x for x in raw.decode().split("\r\n") if x]


def registered(modem: AtModem, state: NbiotState, clock: SimClock) -> None:
    clock.advance(40.0)  # attach takes ~30 s of simulated time
    deadline = time.monotonic() + 2.0
    while state.reg_state != HOME and time.monotonic() < deadline:
        time.sleep(0.02)
    assert state.reg_state == HOME


@pytest.mark.timeout(20)
def test_echo_and_bc95_framing(port: serial.Serial) -> None:
    assert at(port, "AT") == b"AT\r\r\nOK\r\n"
    assert at(port, "AT+CSQ") == b"AT+CSQ\r\r\n+CSQ:99,99\r\n\r\nOK\r\n"  # not attached yet
    assert at(port, "ATE0") == b"ATE0\r\r\nOK\r\n"  # echoed while echo was still on
    assert at(port, "AT+CSQ") == b"\r\n+CSQ:99,99\r\n\r\nOK\r\n"
    assert at(port, "ATE1") == b"\r\nOK\r\n"
    assert at(port, "at") == b"at\r\r\nOK\r\n"  # case-insensitive


@pytest.mark.timeout(20)
def test_identity(port: serial.Serial, state: NbiotState) -> None:
    assert lines(at(port, "AT+CGSN=1"))[1:] == [f"+CGSN:{state.imei}", "OK"]
    assert lines(at(port, "AT+CIMI"))[1:] == [state.imsi, "OK"]
    assert re.fullmatch(r"\d{15}", state.imsi) and re.fullmatch(r"\d{15}", state.imei)
    info = lines(at(port, "ATI"))
    assert info[1] == "Quectel" and info[-1] == "OK"


@pytest.mark.timeout(20)
def test_errors(port: serial.Serial, modem: AtModem) -> None:
    modem.echo = False
    assert at(port, "AT+FOO") == b"\r\nERROR\r\n"
    assert at(port, "HELLO") == b"\r\nERROR\r\n"
    assert at(port, "AT+CEREG=9") == b"\r\n+CME ERROR: 50\r\n"
    assert at(port, "AT+CGSN=7") == b"\r\n+CME ERROR: 50\r\n"
    assert at(port, "AT+CMEE=0") == b"\r\nOK\r\n"
    assert at(port, "AT+CEREG=9") == b"\r\nERROR\r\n"  # numeric errors switched off
    assert modem.commands[-1] == "AT+CEREG=9"


@pytest.mark.timeout(20)
def test_registration_urc_and_attach(
    port: serial.Serial, modem: AtModem, state: NbiotState, sim_clock: SimClock
) -> None:
    modem.echo = False
    assert at(port, "AT+CEREG?") == f"\r\n+CEREG:0,{SEARCHING}\r\n\r\nOK\r\n".encode()
    assert at(port, "AT+CGATT?") == b"\r\n+CGATT:0\r\n\r\nOK\r\n"
    assert at(port, "AT+CEREG=1") == b"\r\nOK\r\n"
    registered(modem, state, sim_clock)
    assert port.read_until(b"+CEREG:1\r\n") == b"\r\n+CEREG:1\r\n"
    assert at(port, "AT+CGATT?") == b"\r\n+CGATT:1\r\n\r\nOK\r\n"
    assert at(port, "AT+CEREG?") == b"\r\n+CEREG:1,1\r\n\r\nOK\r\n"
    csq = int(re.findall(rb"\+CSQ:(\d+),99", at(port, "AT+CSQ"))[0])
    assert csq == state.csq and 0 <= csq <= 31
    assert at(port, "AT+CEREG=2") == b"\r\nOK\r\n"
    full = lines(at(port, "AT+CEREG?"))[0]
    assert full == f'+CEREG:2,1,"{(state.cell_id >> 8) & 0xFFFF:04X}","{state.cell_id:08X}",9'


@pytest.mark.timeout(20)
def test_nuestats_layout_in_tenths(
    port: serial.Serial, modem: AtModem, state: NbiotState, sim_clock: SimClock
) -> None:
    registered(modem, state, sim_clock)
    modem.echo = False
    got = lines(at(port, "AT+NUESTATS"))
    keys = [x.split(":")[0] for x in got[:-1]]
    assert keys == ["Signal power", "Total power", "TX power", "TX time", "RX time", "Cell ID",
                    "ECL", "SNR", "EARFCN", "PCI", "RSRQ", "OPERATOR MODE"]
    stats = dict(x.split(":", 1) for x in got[:-1])
    assert int(stats["Signal power"]) == round(state.rsrp * 10)
    assert int(stats["SNR"]) == round(state.sinr * 10)
    assert int(stats["Cell ID"]) == state.cell_id and int(stats["ECL"]) == state.coverage_class
    assert got[-1] == "OK"


@pytest.mark.timeout(20)
def test_every_profile_point_parses(
    port: serial.Serial, modem: AtModem, state: NbiotState, sim_clock: SimClock
) -> None:
    """The bundled BC95 profile's patterns find their value in this modem's answers."""
    registered(modem, state, sim_clock)
    modem.echo = False
    profile = load_profile(PROFILES / "nbiot_bc95.toml")
    expect = {"imei": state.imei, "imsi": state.imsi, "csq": str(state.csq),
              "rsrp": str(round(state.rsrp * 10)), "sinr": str(round(state.sinr * 10)),
              "cell_id": str(state.cell_id), "coverage_class": str(state.coverage_class),
              "reg_state": str(state.reg_state)}
    for p in profile.at_points:
        answer = lines(at(port, p.command))
        assert answer[-1] == "OK", p.command
        match = next(m for x in answer if (m := re.search(p.pattern, x)))
        group = int(p.group) if p.group.isdigit() else p.group
        assert match.group(group) == expect[p.name], p.name


@pytest.mark.timeout(20)
def test_clock(port: serial.Serial, modem: AtModem) -> None:
    assert lines(at(port, "AT+CCLK?"))[1] == '+CCLK:"26/11/18,11:06:40+00"'
    modem.tz_quarters = 4
    assert lines(at(port, "AT+CCLK?"))[1] == '+CCLK:"26/11/18,12:06:40+04"'


@pytest.mark.timeout(20)
def test_slow_answers_and_urcs_never_split_an_answer(port: serial.Serial, modem: AtModem) -> None:
    modem.echo = False
    modem.slow_s = 0.3
    t0 = time.monotonic()
    port.write(b"AT+CSQ\r")
    time.sleep(0.05)
    modem.push_urc("+NPSMR:1")  # arrives while the answer is pending: must wait for it
    raw = port.read_until(b"+NPSMR:1\r\n")
    assert time.monotonic() - t0 >= 0.3
    assert raw == b"\r\n+CSQ:99,99\r\n\r\nOK\r\n\r\n+NPSMR:1\r\n"
    modem.slow_s = 0.0
    modem.inject_urc_mid_response("+NSONMI:0,4")
    assert at(port, "AT+CSQ") == b"\r\n+CSQ:99,99\r\n+NSONMI:0,4\r\n\r\nOK\r\n"
    assert at(port, "AT+CSQ") == b"\r\n+CSQ:99,99\r\n\r\nOK\r\n"  # only once


@pytest.mark.timeout(20)
def test_faults(port: serial.Serial, state: NbiotState) -> None:
    state.faults.kind = DeviceFault.DEAD
    port.timeout = 0.3
    port.write(b"AT\r")
    assert port.read(64) == b""  # no echo, no answer
    state.faults.kind = DeviceFault.SLOW
    state.faults.slow_s = 0.25
    port.timeout = 2.0
    t0 = time.monotonic()
    assert at(port, "AT") == b"AT\r\r\nOK\r\n"
    assert time.monotonic() - t0 >= 0.25
    state.faults.clear()


@pytest.mark.timeout(20)
def test_modem_survives_reopen(modem: AtModem) -> None:
    for _ in range(2):
        with serial.Serial(modem.path, 9600, timeout=1.0) as s:
            assert at(s, "AT").endswith(b"\r\nOK\r\n")
