"""A CPython ``machine`` module for running node code in tests.

* ``UART(id, ...)`` reads and writes the master end of a pseudo-terminal created beforehand with
  ``attach_pty(id)`` (which returns the slave tty path for the gateway side); reads never block,
  like a MicroPython UART built with ``timeout=0``.
* ``Pin`` keeps its level and the history of levels set (tests check the RS-485 direction pin).
* ``ADC(id).read_u16()`` returns what the test put there with ``set_adc``.
* ``WDT(timeout=ms)``: ``feed()`` raises ``WatchdogExpired`` if the previous feed is older than
  the timeout - on a board the chip would already have reset.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import termios
import threading
import time
import tty
from collections.abc import Callable

from firmware_bridge.shim import ticks

_lock = threading.Lock()
_ptys: dict[int, tuple[int, int]] = {}  # uart id -> (master fd, slave fd)
_adc: dict[int, int] = {}
watchdogs: list[WDT] = []
pins: dict[int | str, Pin] = {}


class WatchdogExpired(Exception):
    """The node did not feed its watchdog in time (a board would have reset)."""


class ResetRequested(Exception):
    """``machine.reset()`` was called."""


def attach_pty(uart_id: int) -> str:
    """Create the pty behind ``UART(uart_id)``; returns the tty path the gateway opens."""
    with _lock:
        if uart_id in _ptys:
            raise ValueError(f"UART({uart_id}) already has a pty")
        master, slave = os.openpty()
        tty.setraw(slave)
        tty.setraw(master)
        os.set_blocking(master, False)
        _ptys[uart_id] = (master, slave)
        return os.ttyname(slave)


def detach_all() -> None:
    """Close every pty and forget pins, ADC values and watchdogs."""
    with _lock:
        for master, slave in _ptys.values():
            for fd in (master, slave):
                with contextlib.suppress(OSError):
                    os.close(fd)
        _ptys.clear()
        _adc.clear()
        watchdogs.clear()
        pins.clear()


def set_adc(adc_id: int, value: int) -> None:
    if not 0 <= value <= 0xFFFF:
        raise ValueError(f"ADC value {value} is not in 0..65535")
    _adc[adc_id] = value


def reset() -> None:
    raise ResetRequested("machine.reset()")


def idle() -> None:
    time.sleep(0)


def unique_id() -> bytes:
    return b"\xe6\x61\x41\x04\x03\x2f\x1b\x28"


class UART:
    def __init__(
        self,
        id: int,
        baudrate: int = 9600,
        bits: int = 8,
        parity: int | None = None,
        stop: int = 1,
        *,
        tx: Pin | None = None,
        rx: Pin | None = None,
        timeout: int = 0,
        timeout_char: int = 0,
        txbuf: int = 256,
        rxbuf: int = 256,
    ) -> None:
        with _lock:
            fds = _ptys.get(id)
        if fds is None:
            raise ValueError(f"UART({id}) has no pty: call machine.attach_pty({id}) first")
        self.id = id
        self.baudrate = baudrate
        self.bits, self.parity, self.stop = bits, parity, stop
        self.timeout = timeout
        self._fd = fds[0]
        self.written = 0

    def any(self) -> int:
        buf = fcntl.ioctl(self._fd, termios.FIONREAD, b"\0\0\0\0")
        n: int = struct.unpack("i", buf)[0]
        return n

    def read(self, nbytes: int = 4096) -> bytes | None:
        try:
            data = os.read(self._fd, nbytes)
        except BlockingIOError:
            return None
        return data or None

    def readinto(self, buf: bytearray | memoryview, nbytes: int | None = None) -> int | None:
        n = len(buf) if nbytes is None else min(nbytes, len(buf))
        data = self.read(n)
        if data is None:
            return None
        buf[: len(data)] = data
        return len(data)

    def write(self, buf: bytes | bytearray | memoryview) -> int:
        view = memoryview(buf)
        while view:
            try:
                n = os.write(self._fd, view)
            except BlockingIOError:
                time.sleep(0.0005)
                continue
            view = view[n:]
        self.written += len(buf)
        return len(buf)

    def flush(self) -> None:
        """The pty has no FIFO to drain."""

    def txdone(self) -> bool:
        return True

    def deinit(self) -> None:
        self._fd = -1


class Pin:
    IN = 0
    OUT = 1
    OPEN_DRAIN = 2
    PULL_UP = 1
    PULL_DOWN = 2
    IRQ_FALLING = 4
    IRQ_RISING = 8

    def __init__(
        self, id: int | str, mode: int = -1, pull: int = -1, *, value: int | None = None
    ) -> None:
        self.id = id
        self.mode = mode
        self._value = 0 if value is None else int(bool(value))
        self.history: list[int] = [] if value is None else [self._value]
        self._irq: Callable[[Pin], None] | None = None
        self._trigger = 0
        pins[id] = self

    def value(self, x: int | bool | None = None) -> int:
        if x is None:
            return self._value
        new = int(bool(x))
        self.history.append(new)
        if self._irq is not None and new != self._value:
            edge = self.IRQ_RISING if new else self.IRQ_FALLING
            self._value = new
            if self._trigger & edge:
                self._irq(self)
        self._value = new
        return new

    def __call__(self, x: int | bool | None = None) -> int:
        return self.value(x)

    def on(self) -> None:
        self.value(1)

    def off(self) -> None:
        self.value(0)

    def irq(self, handler: Callable[[Pin], None] | None = None, trigger: int = 12) -> None:
        self._irq = handler
        self._trigger = trigger


class ADC:
    def __init__(self, id: int | Pin) -> None:
        self.id = id.id if isinstance(id, Pin) else id

    def read_u16(self) -> int:
        key = self.id if isinstance(self.id, int) else -1
        return _adc.get(key, 0)


class WDT:
    def __init__(self, id: int = 0, timeout: int = 5000) -> None:
        if not 1 <= timeout <= 8388:
            raise ValueError(f"WDT timeout {timeout} ms is not in 1..8388 (rp2 limit)")
        self.timeout = timeout
        self.feeds = 0
        self._last = ticks.ticks_ms()
        watchdogs.append(self)

    def overdue_ms(self) -> int:
        return ticks.ticks_diff(ticks.ticks_ms(), self._last) - self.timeout

    def feed(self) -> None:
        late = self.overdue_ms()
        if late > 0:
            raise WatchdogExpired(f"watchdog not fed for {late + self.timeout} ms")
        self.feeds += 1
        self._last = ticks.ticks_ms()
