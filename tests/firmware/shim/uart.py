"""``machine.UART`` for the CPython shim, with the timing of a real UART on an RS-485 line.

A pty has no baud rate and an in-process line has no wire, so the UART keeps the wire's time
itself, like ``simulators.transports.rtu_line`` does:

* received bytes *arrive* one character time apart (10 bits for 8N1, 11 for 8E1 / 8N2): a byte
  is visible to ``any()`` / ``readinto`` only from its arrival on; the receive ring holds
  ``rxbuf`` bytes and, as on the rp2 port, drops what arrives while it is full;
* ``readinto`` has MicroPython's semantics: wait up to ``timeout`` ms for the first byte, then
  take what has arrived and wait up to ``timeout_char`` ms (at least one character, as the rp2
  port enforces) for each next byte; it returns when that wait runs out or the buffer is full;
* ``write`` queues the bytes for the wire and returns; they leave one character time apart,
  ``flush()`` returns when the last one has left, ``txdone()`` tells whether it has.

A UART is attached either to the master side of a pty (``attach_pty``: the gateway opens the
slave side) or to a simulated multi-drop line (``attach_line``: the node hears every frame on
the wire, other units' requests and answers included, and talks onto it).
"""

from __future__ import annotations

import collections
import contextlib
import os
import select
import threading
import time
from typing import Protocol

from tests.firmware.shim import ticks


def char_seconds(baudrate: int, bits: int = 8, parity: int | None = None, stop: int = 1) -> float:
    return (1 + bits + (0 if parity is None else 1) + stop) / baudrate


class RxRing:
    """Bytes with their arrival times; what has arrived, up to ``size`` unread bytes, is
    readable (later arrivals are dropped while the ring is full, and counted)."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self.dropped = 0
        self._q: collections.deque[tuple[float, int]] = collections.deque()
        self._cond = threading.Condition()

    def push(self, data: bytes, first_end: float, char_s: float) -> None:
        """``data`` whose first byte is complete at ``first_end``, the next ones one character
        later each."""
        with self._cond:
            for i, b in enumerate(data):
                self._q.append((first_end + i * char_s, b))
            self._cond.notify_all()

    def _arrived(self, now: float) -> int:
        """Readable bytes at ``now``; drops what overflowed the ring (caller holds the lock)."""
        q = self._q
        n = 0
        for t, _ in q:
            if t > now:
                break
            n += 1
        if n > self.size:
            keep = [q.popleft() for _ in range(self.size)]
            for _ in range(n - self.size):
                q.popleft()
            self.dropped += n - self.size
            q.extendleft(reversed(keep))
            n = self.size
        return n

    def available(self) -> int:
        with self._cond:
            return self._arrived(time.monotonic())

    def take(self, buf: bytearray | memoryview, pos: int, end: int) -> int:
        """Move arrived bytes into ``buf[pos:end]``; how many."""
        with self._cond:
            n = min(self._arrived(time.monotonic()), end - pos)
            for i in range(n):
                buf[pos + i] = self._q.popleft()[1]
            return n

    def wait(self, timeout_s: float) -> bool:
        """True as soon as a byte has arrived, False if none arrives within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                now = time.monotonic()
                if self._arrived(now):
                    return True
                nxt = self._q[0][0] if self._q else None
                until = nxt if nxt is not None and nxt <= deadline else deadline
                if until <= now:
                    return False
                self._cond.wait(until - now)

    def clear(self) -> None:
        with self._cond:
            self._q.clear()


class Link(Protocol):
    """What a UART is attached to."""

    rx: RxRing

    def configure(self, char_s: float, rxbuf: int) -> None: ...

    def transmit(self, data: bytes) -> float:
        """Queue ``data`` for the wire; returns when its last byte will have left."""
        ...

    def close(self) -> None: ...


class PtyLink:
    """The master side of a pty: bytes the gateway writes arrive a character time apart from
    when they were written; our bytes reach the gateway as each one would leave the wire."""

    def __init__(self, master: int, slave: int) -> None:
        self.master, self.slave = master, slave
        self.rx = RxRing()
        self.char_s = char_seconds(9600)
        self._rx_end = float("-inf")
        self._tx: collections.deque[tuple[float, int]] = collections.deque()
        self._tx_end = float("-inf")
        self._tx_cond = threading.Condition()
        self._wake_r, self._wake_w = os.pipe()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._read, name="shim-uart-rx", daemon=True),
                         threading.Thread(target=self._write, name="shim-uart-tx", daemon=True)]
        for t in self._threads:
            t.start()

    def configure(self, char_s: float, rxbuf: int) -> None:
        self.char_s = char_s
        self.rx.size = rxbuf

    def _read(self) -> None:
        while not self._stop.is_set():
            ready = select.select([self.master, self._wake_r], [], [], 0.5)[0]
            if self.master not in ready:
                continue
            try:
                data = os.read(self.master, 4096)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                return
            start = max(time.monotonic(), self._rx_end)
            self._rx_end = start + len(data) * self.char_s
            self.rx.push(data, start + self.char_s, self.char_s)

    def transmit(self, data: bytes) -> float:
        with self._tx_cond:
            start = max(time.monotonic(), self._tx_end)
            for i, b in enumerate(data):
                self._tx.append((start + (i + 1) * self.char_s, b))
            self._tx_end = start + len(data) * self.char_s
            self._tx_cond.notify_all()
            return self._tx_end

    def _write(self) -> None:
        while not self._stop.is_set():
            with self._tx_cond:
                now = time.monotonic()
                if not self._tx:
                    self._tx_cond.wait(0.5)
                    continue
                if self._tx[0][0] > now:
                    self._tx_cond.wait(self._tx[0][0] - now)
                    continue
                out = bytearray()
                while self._tx and self._tx[0][0] <= now:
                    out.append(self._tx.popleft()[1])
            view = memoryview(bytes(out))
            while view:
                try:
                    view = view[os.write(self.master, view):]
                except BlockingIOError:
                    time.sleep(0.0005)
                except OSError:
                    return

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        with self._tx_cond:
            self._tx_cond.notify_all()
        for t in self._threads:
            t.join(5)
        for fd in (self.master, self.slave, self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)


class Wire(Protocol):
    """A simulated multi-drop line a node can sit on (``simulators.transports.rtu_line``)."""

    def attach(self, station: LineLink) -> None: ...

    def detach(self, station: LineLink) -> None: ...

    def transmit(self, station: LineLink, data: bytes, start: float) -> None: ...


class LineLink:
    """A station on a simulated line: hears every frame on the wire (``hear``, called by the
    line with each frame's wire start) and puts its answers on it."""

    def __init__(self, line: Wire, unit_id: int) -> None:
        self.line = line
        self.unit_id = unit_id
        self.rx = RxRing()
        self.char_s = char_seconds(9600)
        self._tx_end = float("-inf")
        self._lock = threading.Lock()
        line.attach(self)

    def configure(self, char_s: float, rxbuf: int) -> None:
        self.char_s = char_s
        self.rx.size = rxbuf

    def hear(self, data: bytes, start: float, char_s: float) -> None:
        self.rx.push(data, start + char_s, char_s)

    def transmit(self, data: bytes) -> float:
        with self._lock:
            start = max(time.monotonic(), self._tx_end)
            self._tx_end = start + len(data) * self.char_s
        self.line.transmit(self, bytes(data), start)
        return self._tx_end

    def close(self) -> None:
        self.line.detach(self)


class UART:
    def __init__(
        self,
        id: int,
        baudrate: int = 9600,
        bits: int = 8,
        parity: int | None = None,
        stop: int = 1,
        *,
        tx: object = None,
        rx: object = None,
        timeout: int = 0,
        timeout_char: int = 0,
        txbuf: int = 256,
        rxbuf: int = 256,
    ) -> None:
        from tests.firmware.shim import machine

        link = machine.link_of(id)
        self.id = id
        self.baudrate = baudrate
        self.bits, self.parity, self.stop = bits, parity, stop
        self.timeout = timeout
        # the rp2 port makes timeout_char at least one (13-bit) character plus a tick
        self.timeout_char = max(timeout_char, 13000 // baudrate + 1)
        self.char_s = char_seconds(baudrate, bits, parity, stop)
        self.link = link
        link.configure(self.char_s, rxbuf)
        self.written = 0
        self._tx_end = float("-inf")

    def any(self) -> int:
        return self.link.rx.available()

    def readinto(self, buf: bytearray | memoryview, nbytes: int | None = None) -> int | None:
        end = len(buf) if nbytes is None else min(nbytes, len(buf))
        rx = self.link.rx
        if end <= 0 or not rx.wait(self.timeout / 1000):
            return None
        got = 0
        while got < end:
            got += rx.take(buf, got, end)
            if got >= end or not rx.wait(self.timeout_char / 1000):
                break
        return got

    def read(self, nbytes: int = 4096) -> bytes | None:
        buf = bytearray(nbytes)
        n = self.readinto(buf)
        return None if n is None else bytes(buf[:n])

    def write(self, buf: bytes | bytearray | memoryview) -> int:
        data = bytes(buf)
        self._tx_end = self.link.transmit(data)
        self.written += len(data)
        return len(data)

    def flush(self) -> None:
        """Returns when the last byte written has left the wire."""
        left = self._tx_end - time.monotonic()
        if left > 0:
            ticks.sleep_us(int(left * 1e6) + 1)

    def txdone(self) -> bool:
        return time.monotonic() >= self._tx_end

    def deinit(self) -> None:
        pass
