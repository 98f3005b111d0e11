"""Pure logic of the RTU line: character times, frame detection, request decoding."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.bus.crc import crc_ok, with_crc
from simulators.transports.rtu_timing import (
    LineTiming,
    check_request,
    exception_response,
    find_request,
    parse_request,
    read_response,
    request_length,
    response_length,
)


def read_req(unit: int, fc: int, addr: int, count: int) -> bytes:
    return with_crc(bytes((unit, fc)) + addr.to_bytes(2, "big") + count.to_bytes(2, "big"))


def test_char_times_follow_line_settings() -> None:
    assert LineTiming(9600).char_s == pytest.approx(10 / 9600)
    assert LineTiming(9600, "E").char_s == pytest.approx(11 / 9600)
    assert LineTiming(9600, "N", 2).bits_per_char == 11
    assert LineTiming(9600).t35_s == pytest.approx(3.5 * 10 / 9600)
    assert LineTiming(19200).t35_s == pytest.approx(3.5 * 10 / 19200)
    assert LineTiming(38400).t35_s == pytest.approx(0.00175)
    assert LineTiming(115200).t15_s == pytest.approx(0.00075)
    assert LineTiming(9600).frame_s(33) == pytest.approx(33 * 10 / 9600)


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [({"baud": 0}, "baud"), ({"baud": 9600, "parity": "X"}, "parity"),
     ({"baud": 9600, "stopbits": 3}, "stopbits"), ({"baud": 9600, "bytesize": 5}, "bytesize")],
)
def test_bad_line_settings_are_named(kwargs: dict[str, object], word: str) -> None:
    with pytest.raises(ValueError, match=word):
        LineTiming(**kwargs)  # type: ignore[arg-type]


def test_request_lengths() -> None:
    assert request_length(read_req(1, 3, 0, 10)) == 8
    fc16 = with_crc(bytes((1, 16, 0, 0, 0, 2, 4, 0, 1, 0, 2)))
    assert request_length(fc16) == len(fc16) == 13
    assert request_length(fc16[:6]) is None  # byte count not there yet
    assert request_length(bytes((1, 0x2B, 0x0E))) is None  # unknown layout


def test_resynchronises_past_garbage() -> None:
    req = read_req(5, 4, 100, 3)
    found = find_request(b"\x00\xff\x13\x37" + req + b"\x01")
    assert found is not None
    assert (found.skipped, found.length) == (4, 8)


def test_corrupted_frame_is_not_found() -> None:
    bad = bytearray(read_req(5, 4, 100, 3))
    bad[3] ^= 0x01
    assert find_request(bad) is None


@given(st.binary(max_size=40), st.integers(1, 247), st.integers(1, 4), st.integers(0, 0xFFFF),
       st.integers(1, 125))
def test_frame_found_after_any_prefix(prefix: bytes, unit: int, fc: int, addr: int, n: int) -> None:
    req = read_req(unit, fc, addr, n)
    found = find_request(prefix + req)
    assert found is not None
    frame = (prefix + req)[found.skipped : found.skipped + found.length]
    assert crc_ok(frame)
    if found.skipped == len(prefix):
        assert frame == req
    else:  # the prefix itself happened to hold a valid frame: it must be a real one
        assert found.skipped < len(prefix)


def test_parse_write_multiple() -> None:
    fc15 = with_crc(bytes((3, 15, 0, 8, 0, 10, 2, 0b1010_0101, 0b10)))
    req = parse_request(fc15)
    assert (req.unit, req.fc, req.address, req.count) == (3, 15, 8, 10)
    assert req.values == (1, 0, 1, 0, 0, 1, 0, 1, 0, 1)
    assert check_request(req) == 0
    fc16 = with_crc(bytes((3, 16, 0, 1, 0, 2, 4, 0x12, 0x34, 0xAB, 0xCD)))
    assert parse_request(fc16).values == (0x1234, 0xABCD)


def test_malformed_requests_get_exception_codes() -> None:
    assert check_request(parse_request(read_req(1, 3, 0, 126))) == 3  # > 125 registers
    assert check_request(parse_request(read_req(1, 3, 0, 0))) == 3
    assert check_request(parse_request(read_req(1, 3, 0xFFFF, 2))) == 2  # past the address space
    bad_coil = with_crc(bytes((1, 5, 0, 0, 0x12, 0x34)))
    assert check_request(parse_request(bad_coil)) == 3
    bad_count = with_crc(bytes((1, 16, 0, 0, 0, 2, 2, 0, 1)))  # 2 regs but 2 bytes
    assert check_request(parse_request(bad_count)) == 3


def test_response_encoding() -> None:
    assert read_response(1, 3, [0x1234, 1]) == with_crc(bytes((1, 3, 4, 0x12, 0x34, 0, 1)))
    assert read_response(1, 1, [1, 0, 0, 0, 0, 0, 0, 0, 1]) == with_crc(bytes((1, 1, 2, 1, 1)))
    assert exception_response(7, 4, 2) == with_crc(bytes((7, 0x84, 2)))
    assert response_length(4, 10) == 25
    assert response_length(1, 9) == 7
    assert response_length(16, 3) == 8
