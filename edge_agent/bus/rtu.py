"""Modbus RTU framing: request building and a resynchronising response parser.

Pure code fed with bytes, no I/O: ``build_read`` / ``build_write`` make a request frame and know
the length of the answer; ``RtuResponseParser`` scans whatever arrives for the first frame that
has the right unit id, function code, length and CRC, skipping garbage in front of it, so a good
answer after line noise is still read. ``decode_read`` / ``check_echo`` turn a frame into values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from edge_agent.bus.crc import crc_ok, with_crc
from edge_agent.bus.pdu import decode_bits_or_regs, read_pdu, write_pdu
from edge_agent.errors import CodecError, FrameError
from edge_agent.profiles.model import Table

EXCEPTION_LEN = 5  # unit, fc | 0x80, code, crc lo, crc hi
MAX_FRAME = 256  # Modbus RTU ADU limit
BROADCAST = 0


@dataclass(frozen=True, slots=True)
class RtuRequest:
    """One request frame and what its answer must look like."""

    frame: bytes
    unit: int
    fc: int
    count: int  # registers or bits asked for / written
    expected_len: int  # length of a normal answer; 0 for a broadcast (no answer)

    @property
    def is_broadcast(self) -> bool:
        return self.unit == BROADCAST


@dataclass(frozen=True, slots=True)
class RtuFrame:
    """A CRC-valid answer: ``data`` is the PDU after the function code (CRC stripped)."""

    unit: int
    fc: int
    data: bytes
    exception_code: int | None = None
    skipped: int = 0  # garbage bytes discarded in front of it


def _check_unit(unit: int, *, broadcast_ok: bool) -> None:
    low = BROADCAST if broadcast_ok else 1
    if not low <= unit <= 247:
        raise CodecError(f"modbus unit id {unit} outside {low}..247")


def build_read(unit: int, table: Table, address: int, count: int) -> RtuRequest:
    """RTU request for fc 1/2/3/4; a read is never broadcast."""
    _check_unit(unit, broadcast_ok=False)
    pdu = read_pdu(table, address, count)
    return RtuRequest(with_crc(bytes((unit,)) + pdu.body), unit, pdu.fc, count, 3 + pdu.answer_len)


def build_write(unit: int, table: Table, address: int, values: Sequence[int]) -> RtuRequest:
    """RTU write request; unit 0 is a broadcast (no answer)."""
    _check_unit(unit, broadcast_ok=True)
    pdu = write_pdu(table, address, values)
    expected = 0 if unit == BROADCAST else 3 + pdu.answer_len
    return RtuRequest(with_crc(bytes((unit,)) + pdu.body), unit, pdu.fc, pdu.count, expected)


class RtuResponseParser:
    """Finds the answer to one request in a byte stream that may hold garbage.

    ``feed`` returns the first CRC-valid frame from the right unit with the right function code
    (or its exception form) and the right length; anything in front of it is skipped. Candidates
    that start like the answer but fail the CRC are remembered (``crc_rejects``) so the caller can
    give up early once the line falls silent. Never raises; holds at most a few frames of bytes.
    """

    def __init__(self, request: RtuRequest) -> None:
        self._unit = request.unit
        self._fc = request.fc
        self._len = request.expected_len
        self._buf = bytearray()
        self._pos = 0  # first offset not yet ruled out as a frame start
        self.received = 0
        self.crc_rejects = 0
        self.first_bad_crc_at = -1  # stream offset of the first candidate that failed its CRC
        self.header_rejects = 0  # bytes skipped that did not even start like the answer

    @property
    def pending(self) -> int:
        """Bytes held that may still be the start of the answer."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes) -> RtuFrame | None:
        self.received += len(data)
        self._buf += data
        frame = self._scan()
        if self._pos > MAX_FRAME:  # keep memory bounded: drop what is ruled out
            del self._buf[: self._pos]
            self._pos = 0
        return frame

    def _scan(self) -> RtuFrame | None:
        buf = self._buf
        n = len(buf)
        while self._pos < n:
            i = self._pos
            if buf[i] != self._unit:
                self._pos += 1
                self.header_rejects += 1
                continue
            if i + 1 >= n:
                return None
            fc = buf[i + 1]
            if fc == self._fc | 0x80:
                need = EXCEPTION_LEN
            elif fc == self._fc:
                need = self._len
                if self._fc <= 4 and i + 2 < n and buf[i + 2] != need - 5:
                    self._pos += 1  # byte count does not fit the request
                    self.header_rejects += 1
                    continue
            else:
                self._pos += 1
                self.header_rejects += 1
                continue
            if i + need > n:
                return None  # a plausible start: wait for more bytes
            candidate = bytes(buf[i : i + need])
            if crc_ok(candidate):
                self._pos = i + need
                skipped = self.received - (n - i)
                if fc & 0x80:
                    return RtuFrame(self._unit, self._fc, b"", candidate[2], skipped)
                return RtuFrame(self._unit, fc, candidate[2:-2], None, skipped)
            if not self.crc_rejects:
                self.first_bad_crc_at = self.received - n + i
            self.crc_rejects += 1
            self._pos += 1
        return None

    def describe(self) -> str:
        """Why no answer was found, for error messages."""
        if not self.received:
            return "no bytes received"
        parts = [f"received={self.received}"]
        if self.crc_rejects:
            parts.append(f"bad_crc={self.crc_rejects} at_byte={self.first_bad_crc_at}")
        if self.header_rejects:
            parts.append(f"garbage={self.header_rejects}")
        if self.pending:
            parts.append(f"truncated={self.pending}/{self._len}")
        return " ".join(parts)


def decode_read(frame: RtuFrame, request: RtuRequest, table: Table) -> list[int]:
    """Values from a read answer: registers as 0..65535, bits as 0/1 (only ``count`` of them)."""
    return decode_bits_or_regs(frame.data, table, request.count)


def check_echo(frame: RtuFrame, request: RtuRequest) -> None:
    """A write answer repeats the request's address and value (5/6) or quantity (15/16)."""
    echo = request.frame[2:6]
    if frame.data[:4] != echo:
        raise FrameError(
            f"write echo mismatch unit={request.unit} fc={request.fc} "
            f"sent={echo.hex()} echoed={frame.data[:4].hex()}"
        )
