"""The AT line splitter, answer sorting and AtPoint conversion: pure, fed with bytes/lines,
including hypothesis properties over arbitrary byte streams."""

from __future__ import annotations

import re

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from edge_agent.bus.at import AtExchange, AtLineSplitter
from edge_agent.bus.at_points import parse_point
from edge_agent.errors import AtError, CodecError
from edge_agent.profiles.model import AtPoint, DataType

ANSWER = b"\r\n+CSQ: 20,99\r\n\r\nOK\r\n"


def run_exchange(ex: AtExchange, stream: bytes, chunk: int = 7) -> bool:
    splitter = AtLineSplitter()
    done = False
    for i in range(0, len(stream), chunk):
        for line in splitter.feed(stream[i : i + chunk]):
            done = ex.feed(line)
    return done


def test_answer_with_echo_urcs_and_errors() -> None:
    ex = AtExchange("AT+CSQ")
    stream = b"\r\n+CEREG:1\r\nAT+CSQ\r" + b"\r\n+CSQ: 20,99\r\n\r\n+NPSMR: 0\r\n\r\nOK\r\n"
    assert run_exchange(ex, stream)
    assert ex.lines == ["+CSQ: 20,99"]
    assert ex.urcs == ["+CEREG:1", "+NPSMR: 0"]
    assert ex.echo_seen and ex.error is None

    ex = AtExchange("AT+CEREG?")  # the command owns +CEREG: its lines are the answer
    assert run_exchange(ex, b"\r\n+CEREG:0,1\r\n\r\n+CSCON:1\r\n\r\nOK\r\n")
    assert ex.lines == ["+CEREG:0,1"] and ex.urcs == ["+CSCON:1"]

    ex = AtExchange("AT+CGSN=9")
    assert run_exchange(ex, b"AT+CGSN=9\r\r\n+CME ERROR: 50\r\n")
    assert ex.error is not None and ex.error.cme == 50

    ex = AtExchange("AT+FOO")
    assert run_exchange(ex, b"\r\nERROR\r\n")
    assert ex.error is not None and ex.error.cme is None

    ex = AtExchange("AT+X")
    assert run_exchange(ex, b"\r\n+CME ERROR: SIM not inserted\r\n")
    assert ex.error is not None and ex.error.cme is None and "SIM not inserted" in str(ex.error)


def test_expected_echo_drops_a_late_answer_before_it() -> None:
    ex = AtExchange("AT+CSQ", expect_echo=True)
    stale = b"\r\n+CSQ: 5,99\r\n\r\nOK\r\n"  # the previous, timed-out command's answer
    assert run_exchange(ex, stale + b"AT+CSQ\r" + ANSWER)
    assert ex.lines == ["+CSQ: 20,99"]
    assert ex.stale == ["+CSQ: 5,99", "OK"]


@settings(deadline=None)  # wall-clock deadlines flake on a loaded CI host
@given(st.binary(max_size=400), st.integers(1, 50))
def test_splitter_never_raises_and_yields_only_clean_lines(data: bytes, chunk: int) -> None:
    splitter = AtLineSplitter()
    lines: list[str] = []
    for i in range(0, len(data), chunk):
        lines += splitter.feed(data[i : i + chunk])
    for line in lines:
        assert line and line == line.strip()
        assert all(0x20 <= ord(c) < 0x7F or c == "\t" for c in line)
        assert "\r" not in line and "\n" not in line
    whole = AtLineSplitter().feed(data + b"\r")  # chunking does not change the lines
    assert lines == whole[: len(lines)]


@settings(deadline=None)  # wall-clock deadlines flake on a loaded CI host
@given(st.binary(max_size=300), st.integers(1, 40))
def test_answer_after_garbage_is_read_with_echo(garbage: bytes, chunk: int) -> None:
    assume(b"AT+CSQ" not in garbage.upper())
    ex = AtExchange("AT+CSQ", expect_echo=True)
    assert run_exchange(ex, garbage + b"\r" + b"AT+CSQ\r" + ANSWER, chunk)
    assert ex.lines == ["+CSQ: 20,99"] and ex.error is None


@settings(deadline=None)  # wall-clock deadlines flake on a loaded CI host
@given(st.lists(st.binary(max_size=30), max_size=10), st.integers(1, 40))
def test_answer_after_noise_lines_is_read_without_echo(noise: list[bytes], chunk: int) -> None:
    # line noise: every garbage line carries at least one byte a module never sends
    garbage = b"".join(b"\x00" + re.sub(rb"[\r\n]", b"", n) + b"\r\n" for n in noise)
    ex = AtExchange("AT+CSQ")
    assert run_exchange(ex, garbage + ANSWER, chunk)
    assert ex.lines == ["+CSQ: 20,99"]


def test_overlong_line_is_dropped_and_the_next_one_kept() -> None:
    splitter = AtLineSplitter()
    assert splitter.feed(b"A" * 5000 + b"\r\nOK\r\n") == ["OK"]
    assert splitter.dropped == 1


def point(**kw: object) -> AtPoint:
    base: dict[str, object] = {"name": "p", "command": "AT+X", "pattern": r"^\+X:(-?[\w.]+)"}
    base.update(kw)
    return AtPoint(**base)  # type: ignore[arg-type]


def test_parse_point_types_scale_and_enum() -> None:
    lines = ["+CSQ:20,99", "Signal power:-850", "+CGATT:1", '+CGSN:"860000000000001"']
    rssi = AtPoint("rssi", "AT+CSQ", r"^\+CSQ:(\d+),", type=DataType.INT16, scale=2, offset=-113)
    assert parse_point(rssi, lines) == -73
    rsrp = AtPoint(
        "rsrp", "AT+NUESTATS", r"^Signal power:(?P<v>-?\d+)", group="v", type=DataType.FLOAT32,
        scale=0.1,
    )
    assert parse_point(rsrp, lines) == pytest.approx(-85.0)
    attached = AtPoint("att", "AT+CGATT?", r"^\+CGATT:(\d)", type=DataType.BOOL)
    assert parse_point(attached, lines) is True
    imei = AtPoint("imei", "AT+CGSN=1", r'^\+CGSN:"(\d+)"', type=DataType.STRING)
    assert parse_point(imei, lines) == "860000000000001"
    state = AtPoint(
        "reg", "AT+CGATT?", r"^\+CGATT:(\d)", type=DataType.ENUM, enum=((0, "detached"), (1, "on"))
    )
    assert parse_point(state, lines) == "on"
    hexid = point(pattern=r"^\+X:(\S+)", type=DataType.UINT32)
    assert parse_point(hexid, ["+X:0x1F"]) == 31


@pytest.mark.parametrize(
    ("p", "lines", "err", "match"),
    [
        (point(), ["+Y:1"], AtError, r"point 'p' \(AT\+X\): no answer line matches"),
        (point(type=DataType.UINT16), ["+X:-1"], CodecError, "outside uint16 range"),
        (point(type=DataType.INT32), ["+X:abc"], CodecError, "not an integer"),
        (point(type=DataType.FLOAT64), ["+X:nan"], CodecError, "not a finite number"),
        (point(type=DataType.BOOL), ["+X:maybe"], CodecError, "not a boolean"),
        (point(type=DataType.ENUM, enum=((1, "a"),)), ["+X:2"], CodecError, "not in its enum"),
        (point(group="3"), ["+X:1"], CodecError, "no group '3'"),
        (point(pattern="(unclosed"), ["+X:1"], CodecError, "bad pattern"),
        (point(pattern=r"^\+X:(a)?(\d)"), ["+X:1"], CodecError, "did not match"),
        (point(type=DataType.BIT), ["+X:1"], CodecError, "not supported"),
    ],
)
def test_parse_point_errors_name_the_point(
    p: AtPoint, lines: list[str], err: type[Exception], match: str
) -> None:
    with pytest.raises(err, match=match):
        parse_point(p, lines)
