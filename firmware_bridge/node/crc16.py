"""Modbus RTU CRC-16 (poly 0xA001 reflected, init 0xFFFF), table-driven, for MicroPython.

The 256-entry table is built once at import into an ``array('H')``; ``crc16`` then only does
small-int arithmetic and indexing, so it allocates nothing on the heap (a ``for i in range(..)``
loop is compiled without creating a range object).
"""

from array import array


def _make_table() -> "array[int]":
    table = array("H", bytes(512))
    for byte in range(256):
        crc = byte
        for _ in range(8):
            if crc & 1:
                crc = (crc >> 1) ^ 0xA001
            else:
                crc >>= 1
        table[byte] = crc
    return table


TABLE = _make_table()


def crc16(buf: bytearray, start: int, end: int) -> int:
    """CRC of ``buf[start:end]`` without slicing (no allocation)."""
    table = TABLE
    crc = 0xFFFF
    for i in range(start, end):
        crc = (crc >> 8) ^ table[(crc ^ buf[i]) & 0xFF]
    return crc


def append_crc(buf: bytearray, n: int) -> int:
    """Write the CRC of ``buf[0:n]`` at ``buf[n]``, ``buf[n+1]`` (low byte first); new length."""
    crc = crc16(buf, 0, n)
    buf[n] = crc & 0xFF
    buf[n + 1] = crc >> 8
    return n + 2


def crc_ok(buf: bytearray, start: int, end: int) -> bool:
    """True if ``buf[start:end]`` (at least 4 bytes) ends with the CRC of the bytes before."""
    if end - start < 4:
        return False
    crc = crc16(buf, start, end - 2)
    return buf[end - 2] == (crc & 0xFF) and buf[end - 1] == (crc >> 8)


def check_crc(buf: bytearray, n: int) -> bool:
    """True if the last two of the ``n`` bytes in ``buf`` are the CRC of the ones before."""
    return crc_ok(buf, 0, n)
