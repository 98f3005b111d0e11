"""Modbus RTU CRC-16 (poly 0xA001 reflected, init 0xFFFF), table-driven. Appended low byte first."""

from __future__ import annotations


def _make_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_TABLE = _make_table()


def crc16(data: bytes | bytearray | memoryview) -> int:
    crc = 0xFFFF
    for b in data:
        crc = (crc >> 8) ^ _TABLE[(crc ^ b) & 0xFF]
    return crc


def with_crc(frame: bytes) -> bytes:
    """``frame`` (unit id + PDU) with its CRC appended, low byte first."""
    c = crc16(frame)
    return frame + bytes((c & 0xFF, c >> 8))


def crc_ok(frame: bytes | bytearray | memoryview) -> bool:
    """True if the last two bytes of ``frame`` are the CRC of the rest."""
    if len(frame) < 4:
        return False
    c = crc16(frame[:-2])
    return frame[-2] == (c & 0xFF) and frame[-1] == (c >> 8)
