"""rtu.py: request frames (checked against pymodbus' independent encoder) and the response
parser, including hypothesis properties over arbitrary byte streams."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymodbus.framer import FramerRTU
from pymodbus.pdu import DecodePDU, ModbusPDU
from pymodbus.pdu.bit_message import (
    ReadCoilsRequest,
    ReadDiscreteInputsRequest,
    WriteMultipleCoilsRequest,
    WriteSingleCoilRequest,
)
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersRequest,
    ReadInputRegistersRequest,
    WriteMultipleRegistersRequest,
    WriteSingleRegisterRequest,
)

from edge_agent.bus.crc import with_crc
from edge_agent.bus.rtu import (
    RtuResponseParser,
    build_read,
    build_write,
    check_echo,
    decode_read,
)
from edge_agent.errors import CodecError, FrameError
from edge_agent.profiles.model import Table

FRAMER = FramerRTU(DecodePDU(False))
READ_PDU: dict[Table, type[ModbusPDU]] = {
    Table.COIL: ReadCoilsRequest,
    Table.DISCRETE: ReadDiscreteInputsRequest,
    Table.HOLDING: ReadHoldingRegistersRequest,
    Table.INPUT: ReadInputRegistersRequest,
}

units = st.integers(1, 247)
tables = st.sampled_from(list(Table))


def test_known_vector() -> None:
    req = build_read(1, Table.HOLDING, 0, 10)
    assert req.frame.hex() == "01030000000ac5cd"
    assert req.expected_len == 5 + 20


@settings(deadline=None)  # wall-clock deadlines flake on a loaded CI host
@given(units, tables, st.integers(0, 65000), st.integers(1, 125))
def test_read_frames_match_pymodbus(unit: int, table: Table, address: int, count: int) -> None:
    req = build_read(unit, table, address, count)
    ref = FRAMER.buildFrame(READ_PDU[table](address=address, count=count, dev_id=unit))
    assert req.frame == ref
    nbytes = (count + 7) // 8 if table.is_bits else 2 * count
    assert req.expected_len == 5 + nbytes


@settings(deadline=None)  # wall-clock deadlines flake on a loaded CI host
@given(units, st.integers(0, 65000), st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=123))
def test_register_writes_match_pymodbus(unit: int, address: int, values: list[int]) -> None:
    req = build_write(unit, Table.HOLDING, address, values)
    pdu: ModbusPDU
    if len(values) == 1:
        pdu = WriteSingleRegisterRequest(address=address, registers=values, dev_id=unit)
    else:
        pdu = WriteMultipleRegistersRequest(address=address, registers=values, dev_id=unit)
    assert req.frame == FRAMER.buildFrame(pdu)
    assert req.expected_len == 8


@settings(deadline=None)  # wall-clock deadlines flake on a loaded CI host
@given(units, st.integers(0, 65000), st.lists(st.integers(0, 1), min_size=1, max_size=200))
def test_coil_writes_match_pymodbus(unit: int, address: int, bits: list[int]) -> None:
    req = build_write(unit, Table.COIL, address, bits)
    pdu: ModbusPDU
    if len(bits) == 1:
        pdu = WriteSingleCoilRequest(address=address, bits=[bool(bits[0])], dev_id=unit)
    else:
        pdu = WriteMultipleCoilsRequest(address=address, bits=[bool(b) for b in bits], dev_id=unit)
    assert req.frame == FRAMER.buildFrame(pdu)


def test_broadcast_write_expects_no_answer_and_bad_requests_are_codec_errors() -> None:
    assert build_write(0, Table.HOLDING, 1, [5]).expected_len == 0
    with pytest.raises(CodecError, match="unit id 0"):
        build_read(0, Table.HOLDING, 0, 1)
    with pytest.raises(CodecError, match="count 126"):
        build_read(1, Table.INPUT, 0, 126)
    with pytest.raises(CodecError, match="65535"):
        build_read(1, Table.HOLDING, 65530, 10)
    with pytest.raises(CodecError, match="read-only"):
        build_write(1, Table.DISCRETE, 0, [1])
    with pytest.raises(CodecError, match=r"0\.\.65535"):
        build_write(1, Table.HOLDING, 0, [1, 70000])
    with pytest.raises(CodecError, match="0/1"):
        build_write(1, Table.COIL, 0, [2])


def answer_for(unit: int, table: Table, values: list[int]) -> bytes:
    """A read answer built by hand (independently of decode_read)."""
    fc = {Table.COIL: 1, Table.DISCRETE: 2, Table.HOLDING: 3, Table.INPUT: 4}[table]
    if table.is_bits:
        packed = bytearray((len(values) + 7) // 8)
        for i, b in enumerate(values):
            packed[i // 8] |= b << (i % 8)
        payload = bytes(packed)
    else:
        payload = b"".join(v.to_bytes(2, "big") for v in values)
    return with_crc(bytes((unit, fc, len(payload))) + payload)


@st.composite
def reads(draw: st.DrawFn) -> tuple[int, Table, list[int]]:
    unit = draw(units)
    table = draw(tables)
    hi = 1 if table.is_bits else 0xFFFF
    values = draw(st.lists(st.integers(0, hi), min_size=1, max_size=40))
    return unit, table, values


@settings(deadline=None)  # wall-clock deadlines flake on a loaded CI host
@given(reads(), st.binary(max_size=300), st.integers(1, 64))
def test_good_answer_after_garbage_is_found(
    read: tuple[int, Table, list[int]], garbage: bytes, chunk: int
) -> None:
    unit, table, values = read
    req = build_read(unit, table, 0, len(values))
    answer = answer_for(unit, table, values)
    parser = RtuResponseParser(req)
    stream = garbage + answer
    frame = None
    for i in range(0, len(stream), chunk):  # arrives in arbitrary pieces
        frame = parser.feed(stream[i : i + chunk])
        if frame is not None:
            break
    assert frame is not None
    assert decode_read(frame, req, table) == values
    assert frame.exception_code is None


@settings(deadline=None)  # wall-clock deadlines flake on a loaded CI host
@given(reads(), st.binary(max_size=600))
def test_arbitrary_bytes_never_raise_and_memory_stays_bounded(
    read: tuple[int, Table, list[int]], noise: bytes
) -> None:
    unit, table, values = read
    req = build_read(unit, table, 0, len(values))
    parser = RtuResponseParser(req)
    for b in noise:
        frame = parser.feed(bytes((b,)))
        if frame is not None:  # only a CRC-valid frame of the right shape may come out
            assert frame.unit == unit
            assert frame.exception_code is not None or len(frame.data) == req.expected_len - 4
            break
        assert parser.pending <= 256
    assert isinstance(parser.describe(), str)


def test_exception_answer_and_wrong_shapes() -> None:
    req = build_read(7, Table.HOLDING, 0, 2)
    p = RtuResponseParser(req)
    frame = p.feed(with_crc(bytes((7, 0x83, 2))))
    assert frame is not None and frame.exception_code == 2
    # wrong unit, wrong fc, wrong byte count, bad crc: all skipped, none taken
    p = RtuResponseParser(req)
    bad_crc = bytearray(answer_for(7, Table.HOLDING, [1, 2]))
    bad_crc[-1] ^= 1
    for junk in (
        answer_for(8, Table.HOLDING, [1, 2]),
        answer_for(7, Table.INPUT, [1, 2]),
        answer_for(7, Table.HOLDING, [1, 2, 3]),
        bytes(bad_crc),
    ):
        assert p.feed(junk) is None
    assert p.crc_rejects == 1
    assert "bad_crc=1 at_byte=29" in p.describe()  # after 9 + 9 + 11 bytes
    frame = p.feed(answer_for(7, Table.HOLDING, [9, 10]))
    assert frame is not None and decode_read(frame, req, Table.HOLDING) == [9, 10]
    assert frame.skipped == 9 + 9 + 11 + 9  # the four junk frames


def test_write_echo_is_checked() -> None:
    req = build_write(3, Table.HOLDING, 10, [1, 2, 3])
    good = RtuResponseParser(req).feed(with_crc(req.frame[:6]))
    assert good is not None
    check_echo(good, req)
    other = RtuResponseParser(req).feed(with_crc(req.frame[:5] + b"\x02"))
    assert other is not None
    with pytest.raises(FrameError, match="echo mismatch"):
        check_echo(other, req)
