"""One serial port read by the event loop: ``SerialPort`` (asyncio I/O on a pyserial fd).

No threads and no busy loops: the port's fd is non-blocking and watched by the event loop
(``add_reader``); every byte is timestamped when read (``last_rx``), so a bus owner knows when the
line last carried a byte and can keep the 3.5-character silent interval exactly. A port that fails
(EIO, hang-up) is reported once (``on_error``) and re-opened with backoff (``ensure_open``).
Errors: ``BusClosed`` only.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import termios
import time
from collections.abc import Callable

import serial

from edge_agent.config.model import SerialBus
from edge_agent.errors import BusClosed, PortBusy, PortDenied
from edge_agent.platform.timers import resolve
from edge_agent.retry import Backoff

log = logging.getLogger(__name__)

_PARITY = {"N": serial.PARITY_NONE, "E": serial.PARITY_EVEN, "O": serial.PARITY_ODD}


class SerialPort:
    """A pyserial port read by the event loop. Bytes are buffered (or handed to ``listener``)
    with the monotonic time of the last read, ``last_rx``."""

    def __init__(self, cfg: SerialBus) -> None:
        self.cfg = cfg
        self.last_rx = 0.0
        self.listener: Callable[[bytes], None] | None = None
        self.on_error: Callable[[], None] | None = None
        self._ser: serial.Serial | None = None
        self._fd = -1
        self._buf = bytearray()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._error: str = ""
        self._reopen_at = 0.0  # when a lost port may be tried again (RetryPolicy backoff)

    def ensure_open(self, backoff: Backoff) -> bool:
        """Open the port if it is not; pace re-opens of a lost port with ``backoff``.
        True if it was (re)opened just now. BusClosed while down or not yet due."""
        if self.is_open:
            return False
        self.close()
        now = time.monotonic()
        if now < self._reopen_at:
            raise BusClosed(f"port={self.cfg.port}: down, retry pending")
        try:
            self.open()
        except BusClosed:
            self._reopen_at = now + backoff.next_delay()
            raise
        backoff.reset()
        return True

    @property
    def is_open(self) -> bool:
        return self._ser is not None and not self._error

    def open(self) -> None:
        cfg = self.cfg
        try:
            self._ser = serial.Serial(
                cfg.port,
                baudrate=cfg.baud,
                bytesize=cfg.bytesize,
                parity=_PARITY.get(cfg.parity, serial.PARITY_NONE),
                stopbits=cfg.stopbits,
                timeout=0,
                write_timeout=0,
                exclusive=True,  # flock: a second master on this line fails here, not on the wire
            )
        except (serial.SerialException, OSError, ValueError, termios.error) as exc:
            # termios.error: settings the device refuses (e.g. a parity a pty cannot take)
            if getattr(exc, "errno", None) in (errno.EAGAIN, errno.EWOULDBLOCK):
                raise PortBusy(f"bus={cfg.name} port={cfg.port}: in use by another program "
                               "(locked)") from exc
            if getattr(exc, "errno", None) in (errno.EACCES, errno.EPERM):
                raise PortDenied(f"bus={cfg.name} port={cfg.port}: not permitted to open it "
                                 f"({os.strerror(errno.EACCES)})", cfg.port) from exc
            why = exc.args[1] if isinstance(exc, termios.error) and len(exc.args) == 2 else exc
            raise BusClosed(f"bus={cfg.name} port={cfg.port}: cannot open: {why}") from exc
        self._fd = self._ser.fileno()
        try:
            os.set_blocking(self._fd, False)
            # pyserial's timeout=0 sets VMIN=0, where an empty read means "no data"; VMIN=1
            # makes that EAGAIN, so an empty read is a real end of file (hang-up)
            attrs = termios.tcgetattr(self._fd)
            attrs[6][termios.VMIN], attrs[6][termios.VTIME] = 1, 0
            termios.tcsetattr(self._fd, termios.TCSANOW, attrs)
        except (termios.error, OSError) as exc:
            self._ser.close()
            self._ser, self._fd = None, -1
            raise BusClosed(f"bus={cfg.name} port={cfg.port}: not a serial line: {exc}") from exc
        self._error = ""
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._fd, self._on_readable)
        log.info("port_open bus=%s port=%s baud=%d", cfg.name, cfg.port, cfg.baud)

    def close(self) -> None:
        if self._ser is None:
            return
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._fd)
        with contextlib.suppress(OSError, serial.SerialException):
            self._ser.close()
        self._ser = None
        self._fd = -1
        self._wake()

    def _fail(self, why: str) -> None:
        self._error = why
        log.warning("port_lost bus=%s port=%s err=%s", self.cfg.name, self.cfg.port, why)
        if self._loop is not None and self._fd >= 0:
            self._loop.remove_reader(self._fd)
        self._wake()
        if self.on_error is not None:
            self.on_error()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _on_readable(self) -> None:
        self.poll()
        self._wake()

    def poll(self) -> int:
        """Read whatever the kernel holds now (non-blocking); returns the byte count."""
        got = 0
        while self._fd >= 0 and not self._error:
            try:
                data = os.read(self._fd, 4096)
            except BlockingIOError:
                break
            except OSError as exc:  # EIO: the other end of a pty / the USB adapter went away
                self._fail(errno.errorcode.get(exc.errno or 0, str(exc)))
                break
            if not data:
                self._fail("eof")
                break
            got += len(data)
            self.last_rx = time.monotonic()
            if self.listener is not None:
                self.listener(data)
            else:
                self._buf += data
        return got

    def take(self) -> bytes:
        """Everything buffered so far (and clear it)."""
        data = bytes(self._buf)
        self._buf.clear()
        return data

    def check(self) -> None:
        if self._ser is None:
            raise BusClosed(f"bus={self.cfg.name} port={self.cfg.port}: closed")
        if self._error:
            raise BusClosed(f"bus={self.cfg.name} port={self.cfg.port}: {self._error}")

    async def wait_data(self, timeout_s: float) -> None:
        """Return when bytes arrive, the port fails, or ``timeout_s`` passes."""
        self.check()
        if self._buf or timeout_s <= 0:
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._waiter = fut
        handle = loop.call_later(timeout_s, resolve, fut)
        try:
            await fut
        finally:
            handle.cancel()
            self._waiter = None

    async def write(self, data: bytes) -> None:
        self.check()
        view = memoryview(data)
        while view:
            try:
                n = os.write(self._fd, view)
            except BlockingIOError:
                n = 0
            except OSError as exc:
                self._fail(errno.errorcode.get(exc.errno or 0, str(exc)))
                self.check()
                return
            view = view[n:]
            if view:  # kernel buffer full: wait until writable
                loop = asyncio.get_running_loop()
                fut: asyncio.Future[None] = loop.create_future()
                loop.add_writer(self._fd, resolve, fut)
                try:
                    await fut
                finally:
                    loop.remove_writer(self._fd)

