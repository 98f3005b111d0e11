"""Modbus RTU slave for MicroPython on an RS-485 line (``machine.UART`` + a direction pin).

Framing is by silence, as RTU demands: bytes are collected into a preallocated buffer and a frame
ends when the line has been quiet for t3.5 (3.5 character times; a fixed 1.75 ms above 19200
baud). The frame is then checked (CRC, unit id, length) and answered after the same silent
interval has passed, with the driver-enable pin high only while our answer is on the wire.

Function codes 1, 2, 3, 4 (read coils / discrete inputs / holding / input registers), 5, 6, 15,
16 (writes). Exceptions: 01 unknown function, 02 address outside the map (or unmapped, or not
writable), 03 bad quantity / length / coil value, 04 a sensor behind the range has failed.
Broadcasts (unit 0) apply writes and are never answered. Frames with a bad CRC or for another
unit are dropped silently (counted in ``stats``).

Hot path (``poll``): receive, CRC, parse and answer index preallocated buffers only; the one
allocation per answer is the memoryview slice handed to ``UART.write``.
"""

import time

from crc16 import append_crc, check_crc
from micropython import const
from regmap import HOLDING, ILLEGAL_FUNCTION, ILLEGAL_VALUE

TYPE_CHECKING = False
if TYPE_CHECKING:
    from machine import UART, Pin
    from regmap import RegisterMap

_BUF = const(256)
_CHUNK = const(64)
# stats indices
FRAMES = const(0)  # answered (or applied broadcast)
CRC_ERRORS = const(1)
OTHER_UNIT = const(2)
EXCEPTIONS = const(3)
OVERRUNS = const(4)
_MAX_REGS = const(125)
_MAX_BITS = const(2000)
_MAX_WRITE_REGS = const(123)
_MAX_WRITE_BITS = const(1968)
_TABLE_OF_FC = (0, 0, 1, 2, 3)  # fc 1..4 -> coil, discrete, holding, input


def silent_interval_us(baud: int, char_bits: int = 11) -> int:
    """t3.5 in microseconds (RTU characters are 11 bits: start, 8 data, parity or 2nd stop)."""
    if baud > 19200:
        return 1750
    return (35 * char_bits * 1000000) // (10 * baud) + 1


class RtuSlave:
    def __init__(
        self,
        uart: "UART",
        unit: int,
        regmap: "RegisterMap",
        baud: int,
        de: "Pin | None" = None,
        char_bits: int = 11,
        echo: bool = False,
    ) -> None:
        """``de``: the transceiver's driver-enable pin (with /RE tied to it). ``echo``: the
        receiver stays enabled while we send, so our own answer comes back and is dropped."""
        if not 1 <= unit <= 247:
            raise ValueError("unit id %d is not in 1..247" % unit)
        self.uart = uart
        self.unit = unit
        self.map = regmap
        self.de = de
        self.echo = echo
        self.t35_us = silent_interval_us(baud, char_bits)
        self.char_us = (char_bits * 1000000) // baud + 1
        self.stats = [0, 0, 0, 0, 0]
        self._rx = bytearray(_BUF)
        self._tx = bytearray(_BUF)
        self._txmv = memoryview(self._tx)
        self._chunk = bytearray(_CHUNK)
        self._n = 0
        self._overrun = False
        self._last = time.ticks_us()
        if de is not None:
            de.value(0)

    def poll(self) -> bool:
        """Take in what the UART holds; answer a frame once the line fell silent. True when a
        frame was handled (answered, applied or dropped)."""
        uart = self.uart
        if uart.any():
            got = uart.readinto(self._chunk)
            if got:
                self._last = time.ticks_us()
                rx, chunk, n = self._rx, self._chunk, self._n
                for i in range(got):
                    if n < _BUF:
                        rx[n] = chunk[i]
                        n += 1
                    else:
                        self._overrun = True
                self._n = n
            return False
        if self._n and time.ticks_diff(time.ticks_us(), self._last) >= self.t35_us:
            self._frame()
            self._n = 0
            self._overrun = False
            return True
        return False

    def _frame(self) -> None:
        rx, n, stats = self._rx, self._n, self.stats
        if self._overrun:
            stats[OVERRUNS] += 1
            return
        if not check_crc(rx, n):
            stats[CRC_ERRORS] += 1
            return
        unit = rx[0]
        if unit != self.unit and unit != 0:
            stats[OTHER_UNIT] += 1
            return
        fc = rx[1]
        size = self._pdu(fc, n - 2, unit == 0)
        if unit == 0:
            stats[FRAMES] += 1
            return
        tx = self._tx
        tx[0] = unit
        if size < 0:
            tx[1] = fc | 0x80
            tx[2] = -size
            size = 3
            stats[EXCEPTIONS] += 1
        else:
            stats[FRAMES] += 1
        self._send(append_crc(tx, size))

    def _pdu(self, fc: int, n: int, broadcast: bool) -> int:
        """Handle the request in ``rx[0:n]`` (unit + PDU, no CRC); the answer goes to ``tx``.
        Returns the answer length (unit + PDU) or minus the exception code."""
        rx, tx, m = self._rx, self._tx, self.map
        if fc < 1 or (fc > 6 and fc != 15 and fc != 16):
            return -ILLEGAL_FUNCTION
        if n < 6:
            return -ILLEGAL_VALUE
        address = (rx[2] << 8) | rx[3]
        qty = (rx[4] << 8) | rx[5]
        if fc <= 4:
            if broadcast:
                return 0
            limit = _MAX_BITS if fc <= 2 else _MAX_REGS
            if n != 6 or qty < 1 or qty > limit:
                return -ILLEGAL_VALUE
            table = _TABLE_OF_FC[fc]
            code = m.check(table, address, qty, False)
            if code:
                return -code
            tx[1] = fc
            end = m.read_into(table, address, qty, tx, 3)
            tx[2] = end - 3
            return end
        if fc == 5 or fc == 6:
            if n != 6:
                return -ILLEGAL_VALUE
            table = 0 if fc == 5 else HOLDING
            if fc == 5:
                if qty != 0xFF00 and qty != 0:
                    return -ILLEGAL_VALUE
                rx[4] = 1 if qty else 0
            code = m.check(table, address, 1, True)
            if code:
                return -code
            m.write_from(table, address, 1, rx, 4, False)
            if fc == 5:
                rx[4] = 0xFF if qty else 0
        else:
            nbytes = rx[6] if n > 6 else -1
            table = 0 if fc == 15 else HOLDING
            limit = _MAX_WRITE_BITS if fc == 15 else _MAX_WRITE_REGS
            want = (qty + 7) >> 3 if fc == 15 else 2 * qty
            if qty < 1 or qty > limit or nbytes != want or n != 7 + nbytes:
                return -ILLEGAL_VALUE
            code = m.check(table, address, qty, True)
            if code:
                return -code
            m.write_from(table, address, qty, rx, 7, fc == 15)
        for i in range(1, 6):  # write answers echo function, address and quantity / value
            tx[i] = rx[i]
        return 6

    def _send(self, n: int) -> None:
        de = self.de
        if de is not None:
            de.value(1)
        self.uart.write(self._txmv[:n])
        if de is not None:
            self.uart.flush()  # returns when the FIFO is empty; the last character still shifts
            time.sleep_us(self.char_us)
            de.value(0)
        if self.echo:
            self._drop_echo(n)
        self._last = time.ticks_us()

    def _drop_echo(self, n: int) -> None:
        """Read back the ``n`` bytes of our own answer (receiver always enabled)."""
        uart, chunk = self.uart, self._chunk
        deadline = time.ticks_add(time.ticks_us(), (n + 4) * self.char_us + self.t35_us)
        while n > 0 and time.ticks_diff(deadline, time.ticks_us()) > 0:
            if uart.any():
                n -= uart.readinto(chunk, n if n < _CHUNK else _CHUNK) or 0


