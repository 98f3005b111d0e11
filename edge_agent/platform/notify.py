"""sd_notify without libsystemd: READY=1, STOPPING=1, STATUS=..., WATCHDOG=1 to $NOTIFY_SOCKET.

No-ops when not started by systemd (no NOTIFY_SOCKET). The watchdog interval comes from
$WATCHDOG_USEC (set by systemd from WatchdogSec=); ``Notifier.watchdog_interval_s`` is half of it.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._addr = env.get("NOTIFY_SOCKET", "")
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        mine = not pid or pid == str(os.getpid())
        self.watchdog_interval_s: float | None = (
            int(usec) / 2_000_000 if usec.isdigit() and int(usec) > 0 and mine else None
        )
        self._sock: socket.socket | None = None
        self._dropping = False

    @property
    def enabled(self) -> bool:
        return bool(self._addr)

    def send(self, *fields: str) -> bool:
        if not self._addr:
            return False
        addr = self._addr
        if addr.startswith("@"):
            addr = "\0" + addr[1:]  # abstract namespace
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                # never block the main loop on a receiver that does not read (full queue)
                self._sock.setblocking(False)
            self._sock.sendto("\n".join(fields).encode(), addr)
            if self._dropping:
                self._dropping = False
                log.info("sd_notify_recovered")
            return True
        except BlockingIOError:
            if not self._dropping:  # first drop at warning, then quiet until recovered
                self._dropping = True
                log.warning("sd_notify_dropped reason=receiver_queue_full")
            return False
        except OSError as exc:
            log.warning("sd_notify_failed err=%s", exc)
            return False

    def ready(self, status: str = "") -> bool:
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def stopping(self) -> bool:
        return self.send("STOPPING=1")

    def reloading(self) -> bool:
        return self.send("RELOADING=1")

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
