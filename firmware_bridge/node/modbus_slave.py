"""Modbus RTU slave for MicroPython on a shared RS-485 line (``machine.UART`` + a direction pin).

Framing. RTU separates frames by t3.5 of silence, but a MicroPython loop cannot time the line:
bytes wait in the UART's buffer while the loop samples a sensor, and frames that were t3.5 apart
come out of ``readinto`` glued together - another unit's answer in front of the request to us.
So frames are cut by content first: the function code gives the length of each of its forms
(request and answer of FC 1-8, 11, 15-17, 22, 23; exception answers), and a length whose CRC
checks is a frame. Another unit's request, that unit's answer and then the request to us are each
taken on their own, however they were glued. What cannot be cut that way (an unknown function
code, noise, a frame cut short) is judged once the line has been silent for t3.5: checked whole
(an unknown function code to us gets exception 01); failing that, a complete request to us at its
end is still served; the rest is dropped.

Silence is measured from when ``readinto`` returned - the latest the last byte can have arrived -
so it is never longer than the real silence, and the answer starts no earlier than t3.5 after the
request, with the driver-enable pin high only while it is on the wire. A request followed by more
bytes before we answer was given up by the master: it is applied (writes) but not answered, so
the node never talks over the line. t3.5 and t1.5 use the real character length (10 bits for
8N1, 11 for 8E1 / 8N2) and the spec's fixed 1750 / 750 us above 19200 baud. Build the UART with
``timeout_char=timeout_char_ms(baud, bits)`` so a read that starts while a frame streams in
returns when it ends.

Function codes 1, 2, 3, 4 (read coils / discrete inputs / holding / input registers), 5, 6, 15,
16 (writes). Exceptions: 01 unknown function, 02 address outside the map (or unmapped, or not
writable), 03 bad quantity / length / coil value, 04 a sensor behind the range has failed.
Broadcasts (unit 0) apply writes and are never answered. Frames for other units, other units'
answers and frames with a bad CRC are dropped silently (counted in ``stats``).

Hot path (``poll``): receive, CRC, parse and answer index preallocated buffers only; the one
allocation per answer is the memoryview slice handed to ``UART.write``.
"""

import time

from crc16 import append_crc, crc_ok
from micropython import const
from regmap import HOLDING, ILLEGAL_FUNCTION, ILLEGAL_VALUE

TYPE_CHECKING = False
if TYPE_CHECKING:
    from machine import UART, Pin
    from regmap import RegisterMap

_MAX_FRAME = const(256)
_CHUNK = const(64)
_BUF = const(320)  # a whole frame and one more chunk: a complete frame is always cut in time
# stats indices
FRAMES = const(0)  # answered (or applied broadcast)
CRC_ERRORS = const(1)  # bytes that made no frame (bad CRC, cut short, noise)
OTHER_UNIT = const(2)  # requests to and answers from other units
EXCEPTIONS = const(3)
OVERRUNS = const(4)
LATE = const(5)  # requests to us the master gave up on before we answered
_MAX_REGS = const(125)
_MAX_BITS = const(2000)
_MAX_WRITE_REGS = const(123)
_MAX_WRITE_BITS = const(1968)
_TABLE_OF_FC = (0, 0, 1, 2, 3)  # fc 1..4 -> coil, discrete, holding, input
_NEED = const(-1)  # a form whose length byte has not arrived yet


def char_bits(bits: int = 8, parity: "int | None" = None, stop: int = 1) -> int:
    """Bits per character on the wire: start + data + parity + stop (8N1: 10, 8E1 / 8N2: 11)."""
    return 1 + bits + (0 if parity is None else 1) + stop


def silent_interval_us(baud: int, char_bits: int = 10) -> int:
    """t3.5 in microseconds (1750 above 19200 baud, as the spec fixes it)."""
    if baud > 19200:
        return 1750
    return (35 * char_bits * 1000000) // (10 * baud) + 1


def char_gap_us(baud: int, char_bits: int = 10) -> int:
    """t1.5 in microseconds: a longer pause inside a frame ends it (750 above 19200 baud)."""
    if baud > 19200:
        return 750
    return (15 * char_bits * 1000000) // (10 * baud) + 1


def timeout_char_ms(baud: int, char_bits: int = 10) -> int:
    """``UART(timeout_char=...)``: t1.5 in whole milliseconds rounded up, plus one for the
    granularity of the millisecond tick the ports time it with."""
    return (char_gap_us(baud, char_bits) + 999) // 1000 + 1


def frame_length(buf: bytearray, start: int, n: int) -> int:
    """The frame at ``buf[start:n]``: its length if a form of its function code is complete
    there and its CRC checks; 0 if more bytes could still complete one; -1 if none can."""
    avail = n - start
    if avail < 4:
        return 0
    fc = buf[start + 1]
    a = b = 0  # lengths of the request and answer forms; 0 = no such form
    if fc & 0x80:
        a = 5
    elif 1 <= fc <= 4 or fc == 17:
        a = 8 if fc != 17 else 4
        b = 5 + buf[start + 2]
    elif fc == 5 or fc == 6 or fc == 8:
        a = 8
    elif fc == 15 or fc == 16:
        a = 8
        b = 9 + buf[start + 6] if avail > 6 else _NEED
    elif fc == 7 or fc == 11:
        a = 4
        b = 5 if fc == 7 else 8
    elif fc == 22:
        a = 10
    elif fc == 23:
        a = 13 + buf[start + 10] if avail > 10 else _NEED
        b = 5 + buf[start + 2]
    else:
        return -1
    ra = _form(buf, start, avail, a)
    if ra > 0:
        return ra
    rb = _form(buf, start, avail, b)
    if rb > 0:
        return rb
    return 0 if ra == 0 or rb == 0 else -1


def request_form(buf: bytearray, n: int) -> bool:
    """Whether the ``n``-byte frame in ``buf`` has the length of a request of its function code
    (FC 1-6: 8 bytes; 15, 16: 9 + byte count) - not of an answer."""
    fc = buf[1]
    if 1 <= fc <= 6:
        return n == 8
    if fc == 15 or fc == 16:
        return n == 9 + buf[6]
    return True


def _form(buf: bytearray, start: int, avail: int, length: int) -> int:
    if length == _NEED:
        return 0
    if length < 4 or length > _MAX_FRAME:
        return -1
    if length > avail:
        return 0
    return length if crc_ok(buf, start, start + length) else -1


class RtuSlave:
    def __init__(
        self,
        uart: "UART",
        unit: int,
        regmap: "RegisterMap",
        baud: int,
        de: "Pin | None" = None,
        char_bits: int = 10,
        echo: bool = False,
    ) -> None:
        """``char_bits``: bits per character (see ``char_bits()``: 10 for 8N1). ``de``: the
        transceiver's driver-enable pin (with /RE tied to it). ``echo``: the receiver stays
        enabled while we send, so our own answer comes back and is dropped."""
        if not 1 <= unit <= 247:
            raise ValueError("unit id %d is not in 1..247" % unit)
        self.uart = uart
        self.unit = unit
        self.map = regmap
        self.de = de
        self.echo = echo
        self.t35_us = silent_interval_us(baud, char_bits)
        self.char_us = (char_bits * 1000000) // baud + 1
        self.stats = [0, 0, 0, 0, 0, 0]
        self._rx = bytearray(_BUF)
        self._tx = bytearray(_MAX_FRAME)
        self._txmv = memoryview(self._tx)
        self._chunk = bytearray(_CHUNK)
        self._n = 0
        self._overrun = False
        self._last = time.ticks_us()  # the latest the last byte received can have arrived
        if de is not None:
            de.value(0)

    def poll(self) -> bool:
        """Take in what the UART holds and handle every complete frame; once the line has been
        silent for t3.5, also what is left. True when a frame was handled (answered, applied or
        dropped)."""
        if self.uart.any():
            self._take()
            quiet = False
        elif self._n:
            quiet = time.ticks_diff(time.ticks_us(), self._last) >= self.t35_us
        else:
            return False
        handled = False
        rx = self._rx
        while self._n:
            n = self._n
            size = -1 if self._overrun else frame_length(rx, 0, n)
            if size > 0:
                if rx[0] == self.unit and not request_form(rx, size):
                    self.stats[OTHER_UNIT] += 1  # an answer as unit us: our own echo
                else:
                    self._frame(size, size < n)
                self._shift(size)
                handled = True
            elif quiet:
                self._leftover(n)
                self._n = 0
                self._overrun = False
                handled = True
            else:
                break
        return handled

    def _take(self) -> None:
        got = self.uart.readinto(self._chunk) or 0
        self._last = time.ticks_us()
        rx, chunk, n = self._rx, self._chunk, self._n
        for i in range(got):
            if n < _BUF:
                rx[n] = chunk[i]
                n += 1
            else:
                self._overrun = True
        self._n = n

    def _shift(self, k: int) -> None:
        """Drop the first ``k`` bytes of the receive buffer."""
        rx, n = self._rx, self._n
        for i in range(k, n):
            rx[i - k] = rx[i]
        self._n = n - k

    def _leftover(self, n: int) -> None:
        """The line fell silent on ``n`` bytes that make no frame by their function code."""
        rx, stats = self._rx, self.stats
        if self._overrun:
            stats[OVERRUNS] += 1
            return
        if crc_ok(rx, 0, n):
            self._frame(n, False)  # e.g. a function code we do not know: exception 01
            return
        stats[CRC_ERRORS] += 1
        # noise (or a frame cut short) glued in front of a request to us: serve the request
        unit = self.unit
        for q in range(n - 8, -1, -1):
            u, fc = rx[q], rx[q + 1]
            if u != unit and u != 0:
                continue
            size = n - q
            if (size == 8 and 1 <= fc <= 6) or (
                (fc == 15 or fc == 16) and size == 9 + rx[q + 6]
            ):
                if crc_ok(rx, q, n):
                    self._n = n
                    self._shift(q)
                    self._frame(size, False)
                    return

    def _frame(self, n: int, superseded: bool) -> None:
        """Handle the frame in ``rx[0:n]`` (its CRC checked). ``superseded``: more bytes followed
        it before we could answer."""
        rx, stats = self._rx, self.stats
        unit = rx[0]
        if unit != self.unit and unit != 0:
            stats[OTHER_UNIT] += 1
            return
        fc = rx[1]
        size = self._pdu(fc, n - 2, unit == 0 or superseded)
        if unit == 0:
            stats[FRAMES] += 1
            return
        if superseded:
            stats[LATE] += 1
            return
        tx = self._tx
        tx[0] = unit
        if size < 0:
            tx[1] = fc | 0x80
            tx[2] = -size
            size = 3
        size = append_crc(tx, size)
        # the answer starts t3.5 after the request, and only if the line stayed quiet
        wait = self.t35_us - time.ticks_diff(time.ticks_us(), self._last)
        if wait > 0:
            time.sleep_us(wait)
        if self.uart.any():
            stats[LATE] += 1
            return
        stats[EXCEPTIONS if tx[1] & 0x80 else FRAMES] += 1
        self._send(size)

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

    def _drop_echo(self, n: int) -> None:
        """Read back the ``n`` bytes of our own answer (receiver always enabled)."""
        uart, chunk = self.uart, self._chunk
        deadline = time.ticks_add(time.ticks_us(), (n + 4) * self.char_us + self.t35_us)
        while n > 0 and time.ticks_diff(deadline, time.ticks_us()) > 0:
            if uart.any():
                n -= uart.readinto(chunk, n if n < _CHUNK else _CHUNK) or 0


