"""A small Modbus RTU slave on a real pty, run in a thread, for the bus owner's integration tests.

It frames requests independently of the code under test (by function code and byte count), keeps
one register/bit image per unit, can be switched into faults, and records every request that
started less than t3.5 after the line last carried a byte (``violations``).
"""

from __future__ import annotations

import os
import select
import threading
import time
import tty
from dataclasses import dataclass, field

from edge_agent.bus.crc import crc_ok, with_crc


@dataclass
class Unit:
    regs: list[int] = field(default_factory=lambda: [0] * 200)
    bits: list[int] = field(default_factory=lambda: [0] * 200)
    fault: str = "none"  # none, dead, slow, bad_crc, truncated, garbage, exception, wrong_unit
    delay_s: float = 0.0
    exception_code: int = 2


def _request_len(buf: bytes | bytearray) -> int:
    """Length of the request at the start of ``buf`` (0 = not known yet)."""
    if len(buf) < 2:
        return 0
    fc = buf[1]
    if fc in (1, 2, 3, 4, 5, 6):
        return 8
    if fc in (15, 16):
        return 9 + buf[6] if len(buf) >= 7 else 0
    return 8


class PtySlave:
    def __init__(self, units: dict[int, Unit], *, baud: int = 115200, turnaround_s: float = 0.0):
        self.units = units
        self.t35 = 3.5 * 10 / baud if baud <= 19200 else 0.00175
        self.turnaround_s = turnaround_s
        self.violations: list[tuple[float, float]] = []  # (gap seen, gap required)
        self.requests: list[bytes] = []
        self.path = ""
        self._master = self._slave = -1
        self._stop_r = self._stop_w = -1
        self._thread: threading.Thread | None = None
        self._last_byte = 0.0
        self._need = self.t35

    def start(self) -> str:
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.path = os.ttyname(self._slave)
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name="pty-rtu-slave", daemon=True)
        self._thread.start()
        return self.path

    def stop(self) -> None:
        if self._thread is not None:
            os.write(self._stop_w, b"x")
            self._thread.join(5)
            self._thread = None
        for fd in (self._master, self._slave, self._stop_r, self._stop_w):
            if fd >= 0:
                os.close(fd)
        self._master = self._slave = self._stop_r = self._stop_w = -1

    def send_raw(self, data: bytes) -> None:
        """Put bytes on the line (noise, a late frame) from the test."""
        os.write(self._master, data)
        self._last_byte = time.monotonic()

    def _run(self) -> None:
        buf = bytearray()
        while True:
            ready, _, _ = select.select([self._master, self._stop_r], [], [], 1.0)
            if self._stop_r in ready:
                return
            if self._master not in ready:
                continue
            try:
                data = os.read(self._master, 4096)
            except OSError:
                return
            now = time.monotonic()
            if not buf:  # first byte of a new request: check the silent interval before it
                gap = now - self._last_byte
                if gap < self._need:
                    self.violations.append((gap, self._need))
            buf += data
            while (n := _request_len(buf)) and len(buf) >= n:
                frame = bytes(buf[:n])
                del buf[:n]
                if not crc_ok(frame):
                    buf.clear()
                    break
                self.requests.append(frame)
                self._serve(frame)
            self._last_byte = max(self._last_byte, now)

    def _serve(self, req: bytes) -> None:
        unit_id, fc = req[0], req[1]
        self._need = self.t35
        if unit_id == 0:
            for u in self.units.values():
                self._apply(u, req)
            self._need = self.t35 + self.turnaround_s
            self._last_byte = time.monotonic()
            return
        unit = self.units.get(unit_id)
        if unit is None or unit.fault == "dead":
            self._last_byte = time.monotonic()
            return
        if unit.fault == "exception":
            answer = with_crc(bytes((unit_id, fc | 0x80, unit.exception_code)))
        else:
            answer = with_crc(bytes((unit_id,)) + self._apply(unit, req))
        if unit.fault == "bad_crc":
            answer = answer[:-1] + bytes(((answer[-1] ^ 0x5A),))
        elif unit.fault == "truncated":
            answer = answer[:-3]
        elif unit.fault == "garbage":
            answer = b"\x00\xff\x13\x37" + answer
        elif unit.fault == "wrong_unit":
            answer = with_crc(bytes((unit_id + 1,)) + answer[1:-2])
        if unit.delay_s:
            time.sleep(unit.delay_s)
        os.write(self._master, answer)
        self._last_byte = time.monotonic()

    @staticmethod
    def _apply(unit: Unit, req: bytes) -> bytes:
        """The answer PDU (without unit id and CRC), after applying writes."""
        fc = req[1]
        addr = int.from_bytes(req[2:4], "big")
        qty = int.from_bytes(req[4:6], "big")
        if fc in (3, 4):
            vals = unit.regs[addr : addr + qty]
            return bytes((fc, 2 * qty)) + b"".join(v.to_bytes(2, "big") for v in vals)
        if fc in (1, 2):
            packed = bytearray((qty + 7) // 8)
            for i, b in enumerate(unit.bits[addr : addr + qty]):
                packed[i // 8] |= b << (i % 8)
            return bytes((fc, len(packed))) + bytes(packed)
        if fc == 5:
            unit.bits[addr] = 1 if qty == 0xFF00 else 0
        elif fc == 6:
            unit.regs[addr] = qty
        elif fc == 15:
            for i in range(qty):
                unit.bits[addr + i] = (req[7 + i // 8] >> (i % 8)) & 1
        elif fc == 16:
            for i in range(qty):
                unit.regs[addr + i] = int.from_bytes(req[7 + 2 * i : 9 + 2 * i], "big")
        return req[1:6]
