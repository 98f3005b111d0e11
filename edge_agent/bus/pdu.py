"""Modbus PDUs, the part Modbus RTU and Modbus TCP share: a request's function code and body
(``read_pdu``, ``write_pdu``: bounds checked), the length of its normal answer, and the values in
a read answer (``decode_bits_or_regs``).

Kept apart from the RTU framing (bus/rtu.py: CRC, the resynchronising response parser) so a
gateway of Modbus TCP endpoints does not load it (issue #15's memory).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from edge_agent.errors import CodecError
from edge_agent.profiles.model import Table

READ_FC: dict[Table, int] = {Table.COIL: 1, Table.DISCRETE: 2, Table.HOLDING: 3, Table.INPUT: 4}
WRITE_SINGLE_FC: dict[Table, int] = {Table.COIL: 5, Table.HOLDING: 6}
WRITE_MULTI_FC: dict[Table, int] = {Table.COIL: 15, Table.HOLDING: 16}

MAX_READ_BITS = 2000
MAX_READ_REGS = 125
MAX_WRITE_BITS = 1968
MAX_WRITE_REGS = 123


def _check_range(address: int, count: int, limit: int, what: str) -> None:
    if not 1 <= count <= limit:
        raise CodecError(f"{what}: count {count} outside 1..{limit}")
    if address < 0 or address + count > 0x10000:
        last = address + count - 1
        raise CodecError(f"{what}: address range {address}..{last} outside 0..65535")


@dataclass(frozen=True, slots=True)
class Pdu:
    """A request PDU (function code first) and the length of its normal answer PDU."""

    fc: int
    body: bytes
    count: int  # registers or bits asked for / written
    answer_len: int  # fc + data of a normal answer


def read_pdu(table: Table, address: int, count: int) -> Pdu:
    """fc 1/2/3/4."""
    fc = READ_FC[table]
    if table.is_bits:
        _check_range(address, count, MAX_READ_BITS, f"read {table}")
        nbytes = (count + 7) // 8
    else:
        _check_range(address, count, MAX_READ_REGS, f"read {table}")
        nbytes = 2 * count
    body = bytes((fc,)) + address.to_bytes(2, "big") + count.to_bytes(2, "big")
    return Pdu(fc, body, count, 2 + nbytes)


def write_pdu(table: Table, address: int, values: Sequence[int]) -> Pdu:
    """fc 5/6 for one value, 15/16 for several."""
    if table not in WRITE_SINGLE_FC:
        raise CodecError(f"table {table} is read-only, cannot write")
    count = len(values)
    if count == 1:
        fc = WRITE_SINGLE_FC[table]
        _check_range(address, 1, 1, f"write {table}")
        v = values[0]
        if table is Table.COIL:
            if v not in (0, 1):
                raise CodecError(f"coil value {v!r} is not 0/1")
            raw = 0xFF00 if v else 0x0000
        else:
            if not 0 <= v <= 0xFFFF:
                raise CodecError(f"register value {v!r} outside 0..65535")
            raw = v
        return Pdu(fc, bytes((fc,)) + address.to_bytes(2, "big") + raw.to_bytes(2, "big"), 1, 5)
    fc = WRITE_MULTI_FC[table]
    if table is Table.COIL:
        _check_range(address, count, MAX_WRITE_BITS, f"write {table}")
        payload = _pack_bits(values)
    else:
        _check_range(address, count, MAX_WRITE_REGS, f"write {table}")
        for i, v in enumerate(values):
            if not 0 <= v <= 0xFFFF:
                raise CodecError(f"register value {v!r} at index {i} outside 0..65535")
        payload = b"".join(v.to_bytes(2, "big") for v in values)
    body = (
        bytes((fc,))
        + address.to_bytes(2, "big")
        + count.to_bytes(2, "big")
        + bytes((len(payload),))
        + payload
    )
    return Pdu(fc, body, count, 5)


def _pack_bits(bits: Sequence[int]) -> bytes:
    out = bytearray((len(bits) + 7) // 8)
    for i, b in enumerate(bits):
        if b not in (0, 1):
            raise CodecError(f"bit value {b!r} at index {i} is not 0/1")
        if b:
            out[i // 8] |= 1 << (i % 8)
    return bytes(out)


def decode_bits_or_regs(data: bytes, table: Table, count: int) -> list[int]:
    """Values from a read answer's data (byte count first): registers 0..65535, bits 0/1."""
    payload = data[1:]
    if table.is_bits:
        return [(payload[i // 8] >> (i % 8)) & 1 for i in range(count)]
    return [int.from_bytes(payload[i : i + 2], "big") for i in range(0, 2 * count, 2)]
