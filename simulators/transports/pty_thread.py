"""A pseudo-terminal served by one thread: what the RS-485 line and the NB-IoT modem share.

The slave side is what the gateway opens with pyserial (like /dev/ttyUSB0); it stays open here too,
so the simulated device survives the gateway closing and reopening the port. A pipe wakes the
thread for a prompt stop.
"""

from __future__ import annotations

import abc
import contextlib
import os
import threading
import tty


class PtyThread(abc.ABC):
    def __init__(self) -> None:
        self.path = ""
        self._master = self._slave = self._wake_r = self._wake_w = -1
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @abc.abstractmethod
    def _run(self) -> None:
        """Each kind of device / transport provides this."""

    def _open(self, what: str) -> str:
        """Open the pty (raw on both sides) and start the serving thread; the slave path."""
        if self._thread is not None:
            raise RuntimeError(f"{what} already started")
        self._master, self._slave = os.openpty()
        tty.setraw(self._master)
        tty.setraw(self._slave)
        self._wake_r, self._wake_w = os.pipe()
        self.path = os.ttyname(self._slave)
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name=f"{what} {self.path}",
                                        daemon=True)
        self._thread.start()
        return self.path

    def _close(self) -> bool:
        """Stop the thread and close every descriptor; False if it was not running."""
        thread, self._thread = self._thread, None
        if thread is None:
            return False
        self._stopping.set()
        os.write(self._wake_w, b"x")
        thread.join(timeout=5.0)
        for fd in (self._master, self._slave, self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._master = self._slave = self._wake_r = self._wake_w = -1
        return True
