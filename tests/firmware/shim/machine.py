"""A CPython ``machine`` module for running node code in tests.

* ``UART(id, ...)`` (``shim/uart.py``) with a real UART's timing: bytes arrive a character time
  apart, ``readinto`` honours ``timeout`` / ``timeout_char``, writes leave at the baud rate. It
  sits on the master end of a pseudo-terminal made with ``attach_pty(id)`` (which returns the
  slave tty path for the gateway side) or on a simulated multi-drop line (``attach_line``).
* ``Pin`` keeps its level and the history of levels set (tests check the RS-485 direction pin).
* ``ADC(id).read_u16()`` returns what the test put there with ``set_adc``.
* ``WDT(timeout=ms)``: ``feed()`` raises ``WatchdogExpired`` if the previous feed is older than
  the timeout - on a board the chip would already have reset.
"""

from __future__ import annotations

import os
import threading
import time
import tty
from collections.abc import Callable

from tests.firmware.shim import ticks
from tests.firmware.shim.uart import UART, LineLink, Link, PtyLink, Wire

_lock = threading.Lock()
_links: dict[int, Link] = {}  # uart id -> what its UART is attached to
_adc: dict[int, int] = {}
watchdogs: list[WDT] = []
pins: dict[int | str, Pin] = {}


class WatchdogExpired(Exception):
    """The node did not feed its watchdog in time (a board would have reset)."""


class ResetRequested(Exception):
    """``machine.reset()`` was called."""


def _attach(uart_id: int, make: Callable[[], Link]) -> Link:
    with _lock:
        if uart_id in _links:
            raise ValueError(f"UART({uart_id}) is already attached")
        link = _links[uart_id] = make()
        return link


def attach_pty(uart_id: int) -> str:
    """Create the pty behind ``UART(uart_id)``; returns the tty path the gateway opens."""
    master, slave = os.openpty()
    tty.setraw(slave)
    tty.setraw(master)
    os.set_blocking(master, False)
    _attach(uart_id, lambda: PtyLink(master, slave))
    return os.ttyname(slave)


def attach_line(uart_id: int, line: Wire, unit_id: int) -> LineLink:
    """Put ``UART(uart_id)`` on a simulated multi-drop line as the station of ``unit_id``."""
    link = _attach(uart_id, lambda: LineLink(line, unit_id))
    assert isinstance(link, LineLink)
    return link


def link_of(uart_id: int) -> Link:
    with _lock:
        link = _links.get(uart_id)
    if link is None:
        raise ValueError(f"UART({uart_id}) is not attached: call machine.attach_pty({uart_id}) "
                         "or machine.attach_line(...) first")
    return link


def detach_all() -> None:
    """Close every pty and line attachment and forget pins, ADC values and watchdogs."""
    with _lock:
        links = list(_links.values())
        _links.clear()
        _adc.clear()
        watchdogs.clear()
        pins.clear()
    for link in links:
        link.close()


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


__all__ = ["ADC", "UART", "WDT", "Pin", "ResetRequested", "WatchdogExpired", "attach_line",
           "attach_pty", "detach_all", "link_of", "set_adc", "unique_id"]
