"""Modbus TCP requests and answers as ``TcpEndpoint`` sends and checks them: the MBAP header,
the request PDUs of reads (cached, shared by every endpoint) and the checks of an answer PDU.

Errors: CodecError (a request that cannot be encoded: unit id, address range), FrameError
(wrong function code, byte count or write echo), ModbusException (an exception answer).
"""

from __future__ import annotations

import struct

from edge_agent.bus.pdu import Pdu, decode_bits_or_regs, read_pdu
from edge_agent.errors import CodecError, FrameError, ModbusException
from edge_agent.profiles.model import Table

MAX_PDU = 253
MAX_FRAME = 7 + MAX_PDU  # MBAP header (unit included) + PDU
MBAP = struct.Struct(">HHHB")  # transaction id, protocol 0, length, unit

ReadKey = tuple[Table, int, int]  # table, address, count

_READS_MAX = 4096  # cached read PDUs (one per distinct request of all devices)
# (table, address, count) -> request PDU and, for registers, the answer's decoder; shared by all
# endpoints (a thousand devices of a few profiles ask a few dozen distinct reads)
_READS: dict[ReadKey, tuple[Pdu, struct.Struct | None]] = {}


def check_unit(unit: int) -> None:
    if not 0 <= unit <= 255:
        raise CodecError(f"modbus unit id {unit} outside 0..255")


def read_request(key: ReadKey) -> tuple[Pdu, struct.Struct | None]:
    """The request PDU of a read and, for registers, the struct of its answer (cached)."""
    cached = _READS.get(key)
    if cached is None:
        table, address, count = key
        pdu = read_pdu(table, address, count)  # CodecError for a bad range: not cached
        if len(_READS) >= _READS_MAX:
            _READS.clear()
        cached = _READS[key] = (pdu, None if table.is_bits else struct.Struct(f">x{count}H"))
    return cached


def answer_data(bus: str, unit: int, pdu: Pdu, answer: bytes) -> bytes:
    """The answer's data after the function code; ModbusException / FrameError."""
    fc = answer[0]
    if fc == pdu.fc | 0x80 and len(answer) >= 2:
        raise ModbusException(answer[1], f"bus={bus} unit={unit} fc={pdu.fc} exception={answer[1]}")
    if fc != pdu.fc:
        raise FrameError(f"bus={bus} unit={unit}: answer function code {fc}, expected {pdu.fc}")
    return answer[1:]


def read_values(bus: str, unit: int, key: ReadKey, pdu: Pdu, regs: struct.Struct | None,
                answer: bytes) -> list[int]:
    """The registers or bits a read's answer PDU holds, checked against its request."""
    data = answer_data(bus, unit, pdu, answer)
    if len(data) != pdu.answer_len - 1 or data[0] != pdu.answer_len - 2:
        raise FrameError(
            f"bus={bus} unit={unit} fc={pdu.fc}: answer of {len(data) + 1} bytes "
            f"(byte count {data[0] if data else '-'}), expected {pdu.answer_len}"
        )
    if regs is not None:
        return list(regs.unpack(data))
    return decode_bits_or_regs(data, key[0], key[2])


def check_write_echo(bus: str, unit: int, pdu: Pdu, answer: bytes) -> None:
    """A write's answer echoes its address and count (or value): FrameError if not."""
    data = answer_data(bus, unit, pdu, answer)
    if data[:4] != pdu.body[1:5]:
        raise FrameError(
            f"bus={bus} unit={unit} fc={pdu.fc}: write echo mismatch "
            f"sent={pdu.body[1:5].hex()} echoed={data[:4].hex()}"
        )
