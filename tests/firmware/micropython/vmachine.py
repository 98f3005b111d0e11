"""Virtual time and a virtual ``machine`` for the node code on a real MicroPython (WebAssembly
or unix port), driven by a timeline of frames on an RS-485 line.

``install(clock)`` puts a ``time`` module (``ticks_ms``/``ticks_us``/``ticks_diff``/
``ticks_add``/``sleep_ms``/``sleep_us`` on the virtual clock) and a ``machine`` module (UART,
Pin, ADC, WDT, unique_id) into ``sys.modules`` before the node modules are imported, so they run
unchanged. Every tick read costs ``clock.step_us`` of virtual time (the loop's own work), sleeps
advance the clock by their length. The UART is a real UART's model: bytes of a frame arrive one
character time apart from the frame's start, ``any``/``readinto`` see only what has arrived
(``readinto`` waits ``timeout`` for the first byte, ``timeout_char`` for each next one), the
ring holds ``rxbuf`` bytes and drops what arrives while full; ``write`` starts when the previous
answer has left and is recorded with its start time, ``flush`` waits for it.

Written for MicroPython first; it also runs (and type-checks) on CPython.
"""

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

_MASK = (1 << 30) - 1  # ticks wrap at 2**30; the mask (not 2**30 itself) is a small int
_HALF = 1 << 29


class Clock:
    def __init__(self, step_us: int = 5) -> None:
        self.now = 0  # microseconds
        self.step_us = step_us

    def advance(self, us: int) -> None:
        if us > 0:
            self.now += us


class VTime:
    """The ``time`` module on the virtual clock (ticks wrap at 2**30 as on the boards)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def ticks_us(self) -> int:
        c = self.clock
        c.now += c.step_us
        return c.now & _MASK

    def ticks_ms(self) -> int:
        return (self.ticks_us() // 1000) & _MASK

    def ticks_cpu(self) -> int:
        return self.ticks_us()

    def ticks_diff(self, a: int, b: int) -> int:
        return ((a - b + _HALF) & _MASK) - _HALF

    def ticks_add(self, t: int, delta: int) -> int:
        return (t + delta) & _MASK

    def sleep_us(self, us: int) -> None:
        self.clock.advance(us)

    def sleep_ms(self, ms: int) -> None:
        self.clock.advance(ms * 1000)

    def sleep(self, s: float) -> None:
        self.clock.advance(int(s * 1000000))

    def time(self) -> int:
        return self.clock.now // 1000000


class Line:
    """What is on the wire: frames ``(start_us, bytes)``, in time order."""

    def __init__(self, clock: Clock, char_us: int) -> None:
        self.clock = clock
        self.char_us = char_us
        self.arrivals = []  # type: list[list[int]]  # [arrival_us, byte]
        self.pos = 0
        self.sent = []  # type: list[tuple[int, bytes]]  # what the node put on the wire
        self.record = True  # False: count answers only (allocation-free, for heap figures)
        self.answers = 0

    def frame(self, start_us: int, data: bytes) -> None:
        for i in range(len(data)):
            self.arrivals.append([start_us + (i + 1) * self.char_us, data[i]])


class UART:
    line = None  # type: Line | None

    def __init__(self, id: int, baudrate: int = 9600, bits: int = 8, parity: "int | None" = None,
                 stop: int = 1, **kw: "Any") -> None:
        line = UART.line
        assert line is not None, "no line: vmachine.install(...) first"
        self.lineobj = line
        self.clock = line.clock
        self.char_us = (1 + bits + (0 if parity is None else 1) + stop) * 1000000 // baudrate
        self.timeout = kw.get("timeout", 0)
        self.timeout_char = max(kw.get("timeout_char", 0), 13000 // baudrate + 1)
        self.rxbuf = kw.get("rxbuf", 256)
        self.ring = []  # type: list[int]
        self.dropped = 0
        self.tx_end = 0

    def _settle(self) -> None:
        ln = self.lineobj
        arr, now = ln.arrivals, self.clock.now
        while ln.pos < len(arr) and arr[ln.pos][0] <= now:
            if len(self.ring) < self.rxbuf:
                self.ring.append(arr[ln.pos][1])
            else:
                self.dropped += 1
            ln.pos += 1

    def _wait(self, ms: int) -> bool:
        """Advance to the next arrival if it comes within ``ms``; whether a byte is there."""
        self._settle()
        if self.ring:
            return True
        ln = self.lineobj
        if ln.pos < len(ln.arrivals) and ln.arrivals[ln.pos][0] <= self.clock.now + ms * 1000:
            self.clock.now = ln.arrivals[ln.pos][0]
            self._settle()
            return True
        self.clock.advance(ms * 1000)
        return False

    def any(self) -> int:
        self._settle()
        return len(self.ring)

    def readinto(self, buf: bytearray, nbytes: "int | None" = None) -> "int | None":
        end = len(buf) if nbytes is None else min(nbytes, len(buf))
        if end <= 0 or not self._wait(self.timeout):
            return None
        got = 0
        ring = self.ring
        while got < end:
            k = min(len(ring), end - got)
            for i in range(k):
                buf[got + i] = ring[i]
            del ring[:k]
            got += k
            if got >= end or not self._wait(self.timeout_char):
                break
        return got

    def write(self, buf: "bytes | bytearray | memoryview") -> int:
        n = len(buf)
        start = self.clock.now if self.clock.now > self.tx_end else self.tx_end
        self.tx_end = start + n * self.char_us
        ln = self.lineobj
        ln.answers += 1
        if ln.record:
            ln.sent.append((start, bytes(buf)))
        return n

    def flush(self) -> None:
        if self.tx_end > self.clock.now:
            self.clock.now = self.tx_end

    def txdone(self) -> bool:
        return self.clock.now >= self.tx_end


class Pin:
    IN = 0
    OUT = 1
    OPEN_DRAIN = 2
    PULL_UP = 1
    PULL_DOWN = 2
    IRQ_FALLING = 4
    IRQ_RISING = 8
    pins = {}  # type: dict[Any, Pin]

    def __init__(
        self, id: "Any", mode: int = -1, pull: int = -1, value: "int | None" = None
    ) -> None:
        self.id = id
        self._v = 0 if value is None else (1 if value else 0)
        Pin.pins[id] = self

    def value(self, x: "Any" = None) -> int:
        if x is None:
            return self._v
        self._v = 1 if x else 0
        return self._v

    def irq(self, handler: "Callable[[Pin], None] | None" = None, trigger: int = 12) -> None:
        pass


class ADC:
    values = {}  # type: dict[int, int]

    def __init__(self, id: "Any") -> None:
        self.id = id

    def read_u16(self) -> int:
        return ADC.values.get(self.id, 0)


class WDT:
    def __init__(self, id: int = 0, timeout: int = 5000) -> None:
        self.timeout = timeout
        self.feeds = 0

    def feed(self) -> None:
        self.feeds += 1


class _Machine:
    UART = UART
    Pin = Pin
    ADC = ADC
    WDT = WDT

    @staticmethod
    def unique_id() -> bytes:
        return b"\xe6\x61\x41\x04\x03\x2f\x1b\x28"  # as the CPython shim's

    @staticmethod
    def reset() -> None:
        raise SystemExit("machine.reset()")


def install(clock: Clock, line: Line) -> None:
    UART.line = line
    sys.modules["time"] = VTime(clock)  # type: ignore[assignment]
    sys.modules["machine"] = _Machine  # type: ignore[assignment]
