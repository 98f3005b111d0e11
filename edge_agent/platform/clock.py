"""Wall-clock trust: is the system clock synchronised, and which boot are we in.

Gateways often boot without a real-time clock; until NTP (or GNSS, chrony ...) disciplines it,
readings carry ``clock_synced=False`` plus the boot id, so a consumer can correct them.

The verdict is systemd-timedated's (``NTPSynchronized``): the kernel's maximum error
(``adjtimex``'s ``maxerror``) below 16 s. ``STA_UNSYNC`` is not consulted — chrony leaves it set
unless ``rtcsync`` is configured, and it makes ``adjtimex`` return ``TIME_ERROR`` on a clock that is
in fact disciplined. The kernel adds 500 µs to ``maxerror`` every second; a time daemon resets it.

Inside the shipped unit ``adjtimex`` is denied, even read-only (ProtectClock=yes and
SystemCallFilter=~@clock; allowing it alone costs 0.4 of ``systemd-analyze security``
exposure, see docs/operations.md). There the verdict comes from systemd-timesyncd's flag file
``/run/systemd/timesync/synchronized``, touched on each synchronisation (when timesyncd has just
set ``maxerror`` to 0): synchronised while the flag is younger than 16 s / 500 ppm = 32000 s, the
moment the kernel's own ``maxerror`` would pass 16 s without a further synchronisation.
``ClockSync.source`` says which source answered: ``adjtimex``, ``timesyncd`` or ``none``.

The boot id comes from ``$CREDENTIALS_DIRECTORY/boot_id`` (the unit's LoadCredential=, because
ProcSubset=pid hides /proc/sys) or else from /proc/sys/kernel/random/boot_id.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from edge_agent.readings import ClockState

log = logging.getLogger(__name__)

STA_UNSYNC = 0x0040
TIME_ERROR = 5
MAXERROR_LIMIT_US = 16_000_000  # systemd-timedated's NTPSynchronized threshold (16 s)
DRIFT_US_PER_S = 500  # what the kernel adds to maxerror each second (MAXFREQ, 500 ppm)
FLAG_FRESH_S = MAXERROR_LIMIT_US / DRIFT_US_PER_S  # 32000 s
TIMESYNC_FLAG = Path("/run/systemd/timesync/synchronized")
BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")
BOOT_ID_CREDENTIAL = "boot_id"
DENIED = (errno.EPERM, errno.EACCES, errno.ENOSYS)


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


def synced_from(ret: int, maxerror_us: int) -> bool:
    """systemd-timedated's verdict on one ``adjtimex`` read: maximum error below 16 s."""
    return ret >= 0 and 0 <= maxerror_us < MAXERROR_LIMIT_US


def flag_synced(age_s: float) -> bool:
    """The verdict from the age of timesyncd's flag: younger than the time ``maxerror`` takes to
    grow from 0 to 16 s. A flag from the future (clock stepped back since) is not trusted."""
    return -1.0 <= age_s < FLAG_FRESH_S


def _load_adjtimex() -> Callable[[ctypes._Pointer[Timex]], int] | None:
    # the C library the interpreter is linked with (dlopen(NULL)); not ctypes.util.find_library:
    # it runs ldconfig in a subprocess and imports tempfile and shutil (~1 MiB) for one name
    fn = None
    for name in (None, "libc.so.6"):
        try:
            fn = ctypes.CDLL(name, use_errno=True).adjtimex
            break
        except (OSError, AttributeError):
            continue
    if fn is None:
        return None
    fn.argtypes = [ctypes.POINTER(Timex)]
    fn.restype = ctypes.c_int
    return fn


_adjtimex = _load_adjtimex()


def read_adjtimex() -> tuple[int, Timex] | int:
    """One read-only ``adjtimex`` (modes 0): (return value, struct), or the errno it failed with."""
    if _adjtimex is None:
        return errno.ENOSYS
    tx = Timex()
    ret = _adjtimex(ctypes.pointer(tx))
    if ret < 0:
        return ctypes.get_errno()
    return ret, tx


class ClockSync:
    """Is the system clock synchronised, from the first source this process may consult:
    ``adjtimex``, else (denied: inside the unit) timesyncd's flag, else none (not synchronised).
    A denied ``adjtimex`` is not retried. Call it: one syscall or one ``stat``."""

    def __init__(self, flag: Path = TIMESYNC_FLAG,
                 adjtimex: Callable[[], tuple[int, Timex] | int] = read_adjtimex) -> None:
        self._flag = flag
        self._adjtimex = adjtimex
        self._denied = False
        self.source = "none"

    def __call__(self) -> bool:
        if not self._denied:
            got = self._adjtimex()
            if not isinstance(got, int):
                self.source = "adjtimex"
                return synced_from(got[0], got[1].maxerror)
            if got not in DENIED:
                log.warning("adjtimex_failed errno=%d", got)
                self.source = "none"
                return False
            self._denied = True
            log.info("clock_source adjtimex=denied fallback=%s", self._flag)
        try:
            mtime = self._flag.stat().st_mtime
        except OSError:
            self.source = "none"
            return False
        self.source = "timesyncd"
        return flag_synced(time.time() - mtime)


def adjtimex_denied() -> int:
    """What ``adjtimex`` gives inside a unit that denies it (ProtectClock=, ~@clock: EPERM)."""
    return errno.EPERM


def service_clock(adjtimex_allowed: bool, flag: Path = TIMESYNC_FLAG) -> ClockSync:
    """The ``ClockSync`` the daemon has inside a unit that allows ``adjtimex`` or denies it: its
    verdict and ``source`` are the service's, whoever asks (`edge-agent doctor`, the tests)."""
    return ClockSync(flag, read_adjtimex if adjtimex_allowed else adjtimex_denied)


def kernel_clock_synced() -> bool:
    """One verdict from a fresh ``ClockSync`` (the doctor's question)."""
    return ClockSync()()


def read_boot_id(path: Path = BOOT_ID_PATH, credentials: str | None = None) -> str:
    """The kernel's boot id: the unit's credential first (ProcSubset=pid hides /proc/sys), then
    ``path``; "unknown" (logged) when neither is readable."""
    creds = os.environ.get("CREDENTIALS_DIRECTORY") if credentials is None else credentials
    candidates = [Path(creds) / BOOT_ID_CREDENTIAL] if creds else []
    for p in [*candidates, path]:
        try:
            text = p.read_text().strip()
        except OSError:
            continue
        if text:
            return text
    log.warning("boot_id_unreadable paths=%s", ",".join(str(p) for p in [*candidates, path]))
    return "unknown"


class ClockProbe:
    """Caches the clock state; re-asks the kernel at most every ``refresh_s`` seconds."""

    def __init__(
        self,
        refresh_s: float = 1.0,
        synced: Callable[[], bool] | None = None,
        boot_id: str | None = None,
    ) -> None:
        self._refresh_s = refresh_s
        self._synced = ClockSync() if synced is None else synced
        self.boot_id = boot_id if boot_id is not None else read_boot_id()
        self._state: ClockState | None = None
        self._checked_at = 0.0

    @property
    def source(self) -> str:
        """Which source gave the last verdict (``ClockSync.source``), "custom" for a test's."""
        return str(getattr(self._synced, "source", "custom"))

    def state(self) -> ClockState:
        now = time.monotonic()
        if self._state is None or now - self._checked_at >= self._refresh_s:
            synced = self._synced()
            if self._state is not None and self._state.synced != synced:
                log.info("clock_sync_changed synced=%s boot_id=%s", synced, self.boot_id)
            self._state = ClockState(synced=synced, boot_id=self.boot_id)
            self._checked_at = now
        return self._state
