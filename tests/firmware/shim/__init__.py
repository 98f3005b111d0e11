"""A CPython stand-in for the MicroPython modules the node code uses - for tests only.

``install()`` makes ``import machine`` / ``import micropython`` resolve to the shim modules and
adds MicroPython's ``time`` helpers (``ticks_ms``, ``ticks_us``, ``ticks_diff``, ``ticks_add``,
``sleep_ms``, ``sleep_us``) to CPython's ``time`` module (only names it lacks), so
``firmware_bridge/node`` runs unchanged. ``machine.UART`` talks to a pseudo-terminal made with
``machine.attach_pty(uart_id)``; the gateway opens the returned tty path.
"""

from __future__ import annotations

import sys
import time
from types import ModuleType

from tests.firmware.shim import machine, micropython, ticks

_TIME_HELPERS = ("ticks_ms", "ticks_us", "ticks_cpu", "ticks_diff", "ticks_add", "sleep_ms",
                 "sleep_us")


def install() -> None:
    """Idempotent. The node modules must be imported after this."""
    sys.modules["machine"] = machine
    sys.modules["micropython"] = micropython
    for name in _TIME_HELPERS:
        if not hasattr(time, name):
            setattr(time, name, getattr(ticks, name))


def uninstall() -> None:
    for name, mod in (("machine", machine), ("micropython", micropython)):
        if sys.modules.get(name) is mod:
            del sys.modules[name]
    for name in _TIME_HELPERS:
        if getattr(time, name, None) is getattr(ticks, name):
            delattr(time, name)


def is_installed() -> bool:
    current: ModuleType | None = sys.modules.get("machine")
    return current is machine


__all__ = ["install", "is_installed", "machine", "micropython", "ticks", "uninstall"]
