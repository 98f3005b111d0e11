"""pytest plugin: fail any test that leaves asyncio tasks/loops, threads, child processes or
listening sockets behind. Loaded for every run through ``addopts = -p tests.hygiene``.

Checks run after the test's own fixtures are torn down; leftovers get a short grace period (a thread
or process that is already on its way out is not a leak) and are then reported as a teardown error.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import weakref
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

_loops: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()
_orig_init = asyncio.BaseEventLoop.__init__


def _tracking_init(self: asyncio.BaseEventLoop, *args: Any, **kwargs: Any) -> None:
    _orig_init(self, *args, **kwargs)
    _loops.add(self)


asyncio.BaseEventLoop.__init__ = _tracking_init  # type: ignore[method-assign,assignment]

GRACE_S = 3.0


def _threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.is_alive()}


def _children() -> set[int]:
    me = os.getpid()
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces, split after the last ')'
        rest = stat.rsplit(")", 1)[1].split()
        state, ppid = rest[0], int(rest[1])
        if ppid == me and state != "Z":
            found.add(int(entry.name))
    return found


def _socket_inodes() -> set[str]:
    inodes: set[str] = set()
    fd_dir = Path("/proc/self/fd")
    for fd in fd_dir.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def _listening() -> set[str]:
    """'proto:port' of TCP sockets in LISTEN state owned by this process."""
    mine = _socket_inodes()
    out: set[str] = set()
    for proto in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/net/{proto}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) > 9 and parts[3] == "0A" and parts[9] in mine:
                out.add(f"{proto}:{int(parts[1].split(':')[1], 16)}")
    return out


def _pending_async() -> list[str]:
    out: list[str] = []
    for loop in list(_loops):
        if loop.is_closed():
            continue
        if loop.is_running():
            continue  # a loop owned by a still-running harness is reported through its thread
        tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
        out.append(f"unclosed event loop {loop!r} with {len(tasks)} pending task(s)")
    return out


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    item.stash[_KEY] = (_threads(), _children(), _listening())
    yield


_KEY = pytest.StashKey[tuple[set[threading.Thread], set[int], set[str]]]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    yield
    before = item.stash.get(_KEY, None)
    if before is None:
        return
    threads0, children0, ports0 = before
    deadline = time.monotonic() + GRACE_S
    while True:
        threads = {t for t in _threads() - threads0 if not t.daemon or t.name != "pydevd"}
        children = _children() - children0
        ports = _listening() - ports0
        loops = _pending_async()
        if not (threads or children or ports or loops) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    problems: list[str] = []
    if threads:
        problems.append("threads left running: " + ", ".join(sorted(t.name for t in threads)))
    if children:
        problems.append(f"child processes left running: {sorted(children)}")
    if ports:
        problems.append(f"listening sockets left open: {sorted(ports)}")
    problems.extend(loops)
    if problems:
        for loop in list(_loops):  # do not cascade into the next test
            if not loop.is_closed() and not loop.is_running():
                loop.close()
        pytest.fail("test hygiene: " + "; ".join(problems), pytrace=False)
