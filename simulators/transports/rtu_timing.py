"""Modbus RTU wire arithmetic and slave-side frame handling, free of I/O.

Character times follow the line settings (1 start + data bits + parity bit + stop bits); the
inter-frame silence t3.5 and the inter-character limit t1.5 are fixed at 1.75 ms / 0.75 ms above
19200 baud, as the Modbus serial line specification (V1.02, 2.5.1.1) recommends.

A slave finds request frames the way real firmware does without a reliable silence detector: by
the function code's known request length (and, for fc 15/16, the byte-count field) plus the CRC,
skipping bytes until a valid frame starts.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge_agent.bus.crc import crc_ok, with_crc
from edge_agent.profiles.model import Table

PARITIES = ("N", "E", "O")

READ_TABLES: dict[int, Table] = {
    1: Table.COIL,
    2: Table.DISCRETE,
    3: Table.HOLDING,
    4: Table.INPUT,
}
WRITE_FCS = (5, 6, 15, 16)
FIXED_LENGTH_FCS = (1, 2, 3, 4, 5, 6)  # unit, fc, 2 x uint16, crc: 8 bytes
KNOWN_FCS = (*FIXED_LENGTH_FCS, 15, 16)
MAX_UNIT = 247  # 248..255 are reserved


@dataclass(frozen=True, slots=True)
class LineTiming:
    """Character and silence times of one serial line configuration."""

    baud: int
    parity: str = "N"
    stopbits: int = 1
    bytesize: int = 8

    def __post_init__(self) -> None:
        if self.baud <= 0:
            raise ValueError(f"baud must be > 0, got {self.baud}")
        if self.parity not in PARITIES:
            raise ValueError(f"parity must be one of {PARITIES}, got {self.parity!r}")
        if self.stopbits not in (1, 2):
            raise ValueError(f"stopbits must be 1 or 2, got {self.stopbits}")
        if self.bytesize not in (7, 8):
            raise ValueError(f"bytesize must be 7 or 8, got {self.bytesize}")

    @property
    def bits_per_char(self) -> int:
        return 1 + self.bytesize + (0 if self.parity == "N" else 1) + self.stopbits

    @property
    def char_s(self) -> float:
        return self.bits_per_char / self.baud

    @property
    def t35_s(self) -> float:
        """Minimum silence between frames."""
        return 0.00175 if self.baud > 19200 else 3.5 * self.char_s

    @property
    def t15_s(self) -> float:
        """Maximum silence between two characters of one frame."""
        return 0.00075 if self.baud > 19200 else 1.5 * self.char_s

    def frame_s(self, n_bytes: int) -> float:
        return n_bytes * self.char_s


def request_length(buf: bytes | bytearray, start: int = 0) -> int | None:
    """Length of the request frame beginning at ``buf[start]``, or None if it cannot be known yet
    (too few bytes) or ever (function code without a known request layout)."""
    avail = len(buf) - start
    if avail < 2:
        return None
    fc = buf[start + 1]
    if fc in FIXED_LENGTH_FCS:
        return 8
    if fc in (15, 16):
        if avail < 7:
            return None
        return 9 + buf[start + 6]
    return None


@dataclass(frozen=True, slots=True)
class Found:
    skipped: int  # garbage bytes before the frame
    length: int  # frame length including the CRC


def find_request(buf: bytes | bytearray) -> Found | None:
    """The first complete, CRC-valid request in ``buf`` (at the lowest offset), or None."""
    for start in range(0, max(0, len(buf) - 3)):
        n = request_length(buf, start)
        if n is not None and start + n <= len(buf) and crc_ok(buf[start : start + n]):
            return Found(start, n)
    return None


@dataclass(frozen=True, slots=True)
class Request:
    unit: int
    fc: int
    address: int
    count: int  # registers / bits to read or write (1 for fc 5/6)
    values: tuple[int, ...]  # written values (registers, or 0/1 bits)
    byte_count_ok: bool = True
    value_ok: bool = True  # fc 5: value must be 0xFF00 or 0x0000

    def describe(self) -> str:
        return f"unit={self.unit} fc={self.fc} addr={self.address} count={self.count}"


def parse_request(frame: bytes) -> Request:
    """Decode a CRC-valid frame found by ``find_request``."""
    unit, fc = frame[0], frame[1]
    address = int.from_bytes(frame[2:4], "big")
    word = int.from_bytes(frame[4:6], "big")
    if fc in READ_TABLES:
        return Request(unit, fc, address, word, ())
    if fc == 5:
        bit = 1 if word == 0xFF00 else 0
        return Request(unit, fc, address, 1, (bit,), value_ok=word in (0, 0xFF00))
    if fc == 6:
        return Request(unit, fc, address, 1, (word,))
    data = frame[7:-2]
    if fc == 15:
        bits = tuple((data[i // 8] >> (i % 8)) & 1 for i in range(min(word, len(data) * 8)))
        return Request(unit, fc, address, word, bits, frame[6] == (word + 7) // 8)
    # fc 16
    regs = tuple(int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data) - 1, 2))
    return Request(unit, fc, address, word, regs, frame[6] == 2 * word)


def check_request(req: Request) -> int:
    """Modbus exception code for a malformed request (3 = illegal data value), 0 if fine."""
    limits = {1: 2000, 2: 2000, 3: 125, 4: 125, 15: 1968, 16: 123}
    if req.fc in limits and not 1 <= req.count <= limits[req.fc]:
        return 3
    if not (req.byte_count_ok and req.value_ok):
        return 3
    if req.address + req.count > 0x10000:
        return 2
    return 0


def read_response(unit: int, fc: int, values: list[int]) -> bytes:
    """Normal response to a read: registers big-endian, bits packed LSB first."""
    if fc in (1, 2):
        packed = bytearray((len(values) + 7) // 8)
        for i, bit in enumerate(values):
            if bit:
                packed[i // 8] |= 1 << (i % 8)
        body = bytes(packed)
    else:
        body = b"".join((v & 0xFFFF).to_bytes(2, "big") for v in values)
    return with_crc(bytes((unit, fc, len(body))) + body)


def write_response(req: Request, frame: bytes) -> bytes:
    """Normal response to a write: fc 5/6 echo the request; fc 15/16 echo address and quantity."""
    if req.fc in (5, 6):
        return frame
    return with_crc(frame[:6])


def exception_response(unit: int, fc: int, code: int) -> bytes:
    return with_crc(bytes((unit, (fc | 0x80) & 0xFF, code & 0xFF)))


def response_length(fc: int, count: int) -> int:
    """Bytes of the normal response to a request (what a master expects to receive)."""
    if fc in (1, 2):
        return 5 + (count + 7) // 8
    if fc in (3, 4):
        return 5 + 2 * count
    return 8
