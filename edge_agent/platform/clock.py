"""Wall-clock trust: is the kernel clock synchronised (adjtimex), and which boot are we in.

Gateways often boot without a real-time clock; until NTP (or GNSS, chrony ...) disciplines the clock
the kernel reports ``STA_UNSYNC`` in ``timex.status`` and ``adjtimex`` returns ``TIME_ERROR``.
Readings taken then carry ``clock_synced=False`` plus the boot id, so a consumer can correct them.

``adjtimex(2)`` with ``modes = 0`` only reads; it needs no privilege.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import time
from collections.abc import Callable
from pathlib import Path

from edge_agent.readings import ClockState

log = logging.getLogger(__name__)

STA_UNSYNC = 0x0040
TIME_ERROR = 5
BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class Timex(ctypes.Structure):
    """``struct timex`` from <sys/timex.h> (glibc layout, native ``long`` width)."""

    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time", _Timeval),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stable", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("_padding", ctypes.c_int * 11),
    ]


def synced_from(ret: int, status: int) -> bool:
    """The kernel's verdict: synchronised unless TIME_ERROR is returned or STA_UNSYNC is set."""
    return ret != TIME_ERROR and not status & STA_UNSYNC and ret >= 0


def _load_adjtimex() -> Callable[[ctypes._Pointer[Timex]], int] | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        fn = libc.adjtimex
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.POINTER(Timex)]
    fn.restype = ctypes.c_int
    return fn


_adjtimex = _load_adjtimex()


def kernel_clock_synced() -> bool:
    """One ``adjtimex`` read. False when the call is unavailable or fails (trust nothing)."""
    if _adjtimex is None:
        return False
    tx = Timex()
    ret = _adjtimex(ctypes.pointer(tx))
    if ret < 0:
        log.warning("adjtimex_failed errno=%d", ctypes.get_errno())
        return False
    return synced_from(ret, tx.status)


def read_boot_id(path: Path = BOOT_ID_PATH) -> str:
    try:
        return path.read_text().strip()
    except OSError as e:
        log.warning("boot_id_unreadable path=%s err=%s", path, e)
        return "unknown"


class ClockProbe:
    """Caches the clock state; re-asks the kernel at most every ``refresh_s`` seconds."""

    def __init__(
        self,
        refresh_s: float = 1.0,
        synced: Callable[[], bool] = kernel_clock_synced,
        boot_id: str | None = None,
    ) -> None:
        self._refresh_s = refresh_s
        self._synced = synced
        self.boot_id = boot_id if boot_id is not None else read_boot_id()
        self._state: ClockState | None = None
        self._checked_at = 0.0

    def state(self) -> ClockState:
        now = time.monotonic()
        if self._state is None or now - self._checked_at >= self._refresh_s:
            synced = self._synced()
            if self._state is not None and self._state.synced != synced:
                log.info("clock_sync_changed synced=%s boot_id=%s", synced, self.boot_id)
            self._state = ClockState(synced=synced, boot_id=self.boot_id)
            self._checked_at = now
        return self._state
