"""``AtClient``: AT-command client for a cellular (NB-IoT) module on a serial line.

Pure parts, fed with bytes / lines so they can be tested with arbitrary streams:

* ``AtLineSplitter`` cuts the byte stream into lines at CR or LF and drops what cannot be a line
  of a module's answer (bytes outside printable ASCII, overlong lines): line noise never reaches
  an answer, and the next CR/LF resynchronises.
* ``AtExchange`` sorts the lines seen while one command runs: its echo (dropped), URCs (routed
  away, even in the middle of the answer), information lines (the answer), and the final result:
  ``OK``; ``ERROR`` / ``+CME ERROR: n`` / ``+CMS ERROR: n`` / ``NO CARRIER`` ... -> ``AtError``.

A line is a URC when it starts with a known unsolicited prefix (``+CEREG:``, ``RING`` ...) unless
the running command asked for exactly that prefix (``AT+CEREG?`` answers ``+CEREG: 0,1``).
When the module echoes commands, lines that arrive before the echo are stale (a late answer to a
timed-out command) and are dropped. After a timeout (or a command cancelled before its final
result: its answer may still come) the client waits, before the next command,
until the line was quiet for max(that timeout, ``RESYNC_QUIET_S``) counted from the failure, so a
late answer arrives while no command runs and is dropped (only URCs pass). An answer later than
that cannot be told from the next one when echo is off.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import re
import time
from collections.abc import Callable, Iterable

from edge_agent.bus.serial_port import SerialPort
from edge_agent.config.model import BusKind, SerialBus
from edge_agent.errors import AtError, BusClosed, BusTimeout, CodecError
from edge_agent.platform.timers import resolve, timers_for
from edge_agent.retry import Backoff, RetryPolicy

log = logging.getLogger(__name__)

DEFAULT_URC_PREFIXES: tuple[str, ...] = (
    "+CEREG", "+CREG", "+CGREG", "+CSCON", "+NPSMR", "+CGEV", "+NNMI", "+NSONMI", "+NSOCLI",
    "+QIURC", "+QIND", "+QLWEVTIND", "+CMTI", "+CDSI", "+CTZV", "+CTZE", "+CTZEU", "+CPIN",
    "+CFUN", "RING", "+IP",
)
MAX_LINE = 1024
RESYNC_QUIET_S = 0.2
ERROR_FINALS = ("ERROR", "NO CARRIER", "NO DIALTONE", "BUSY", "NO ANSWER")
_CME = re.compile(r"^\+(CME|CMS) ERROR:\s*(.*)$")
_PREFIX = re.compile(r"^AT([+^$%&][A-Z0-9_]+)", re.IGNORECASE)


class AtLineSplitter:
    """Bytes in, clean text lines out. Never raises; memory bounded by ``MAX_LINE``."""

    def __init__(self) -> None:
        self._cur = bytearray()
        self._overlong = False
        self.dropped = 0  # lines thrown away as garbage

    def feed(self, data: bytes) -> list[str]:
        out: list[str] = []
        for chunk in re.split(rb"([\r\n])", data):
            if chunk in (b"\r", b"\n"):
                self._end_line(out)
            elif chunk:
                if len(self._cur) + len(chunk) > MAX_LINE:
                    self._overlong = True
                    self._cur.clear()
                else:
                    self._cur += chunk
        return out

    def _end_line(self, out: list[str]) -> None:
        raw = bytes(self._cur).strip(b" \t")
        self._cur.clear()
        if self._overlong:
            self._overlong = False
            self.dropped += 1
            return
        if not raw:
            return
        if all(0x20 <= b < 0x7F or b == 0x09 for b in raw):
            out.append(raw.decode("ascii"))
        else:
            self.dropped += 1


def _prefix(text: str) -> str:
    """'+CEREG' of '+CEREG: 1' / '+CEREG:1' / 'RING' of 'RING'."""
    return text.split(":", 1)[0].strip().upper()


def is_urc(line: str, prefixes: Iterable[str], owned: str = "") -> bool:
    p = _prefix(line)
    return p != owned and p in prefixes


class AtExchange:
    """The lines of one command's answer. ``feed`` returns True once the final result came."""

    def __init__(
        self,
        command: str,
        *,
        urc_prefixes: Iterable[str] = DEFAULT_URC_PREFIXES,
        expect_echo: bool = False,
    ) -> None:
        self.command = command.strip()
        m = _PREFIX.match(self.command)
        self.owned = m.group(1).upper() if m else ""
        self.urc_prefixes = frozenset(p.upper() for p in urc_prefixes)
        self.expect_echo = expect_echo
        self.echo_seen = False
        self.lines: list[str] = []
        self.urcs: list[str] = []
        self.stale: list[str] = []
        self.done = False
        self.error: AtError | None = None

    def feed(self, line: str) -> bool:
        if self.done:
            return True
        if not self.echo_seen and line.upper() == self.command.upper():
            self.echo_seen = True
            self.stale.extend(self.lines)  # whatever came before our echo was not our answer
            self.lines.clear()
            return False
        if is_urc(line, self.urc_prefixes, self.owned):
            self.urcs.append(line)
            return False
        if self.expect_echo and not self.echo_seen:
            self.stale.append(line)
            return False
        if line == "OK":
            self.done = True
        elif line in ERROR_FINALS or _CME.match(line):
            self.done = True
            self.error = _error(self.command, line)
        else:
            self.lines.append(line)
        return self.done


def _echo_after(command: str, echoed: bool) -> bool:
    """Whether the module echoes once ``command`` succeeded (ATE0/ATE1 switch it; ATZ/AT&F
    restore a default we do not know, so assume off: expecting no echo never drops an answer)."""
    c = command.upper().replace(" ", "")
    if c == "ATE0":
        return False
    if c in ("ATE1", "ATE"):
        return True
    if c.startswith(("ATZ", "AT&F")):
        return False
    return echoed


def _error(command: str, line: str) -> AtError:
    m = _CME.match(line)
    if m is None:
        return AtError(f"{command}: {line}")
    detail = m.group(2).strip()
    code = int(detail) if detail.isdigit() else None
    return AtError(f"{command}: +{m.group(1)} ERROR: {detail}", cme=code)


class AtClient:
    """Serial AT client. ``command`` runs one command at a time; URCs go to ``on_urc`` or, when
    no callback is given, to the bounded ``urcs`` deque."""

    def __init__(
        self,
        port: str,
        baud: int = 9600,
        *,
        name: str = "",
        on_urc: Callable[[str], None] | None = None,
        urc_prefixes: Iterable[str] = DEFAULT_URC_PREFIXES,
        retry: RetryPolicy | None = None,
        parity: str = "N",
        stopbits: int = 1,
        bytesize: int = 8,
    ) -> None:
        self.name = name or port
        cfg = SerialBus(
            name=self.name, port=port, baud=baud, parity=parity, stopbits=stopbits,
            bytesize=bytesize, kind=BusKind.AT,
        )
        self._port = SerialPort(cfg)
        self._port.listener = self._on_bytes
        self._port.on_error = self._on_port_error
        self._splitter = AtLineSplitter()
        self._prefixes = tuple(p.upper() for p in urc_prefixes)
        self._on_urc = on_urc
        self.urcs: collections.deque[str] = collections.deque(maxlen=256)
        self._exchange: AtExchange | None = None
        self._done: asyncio.Future[None] | None = None
        self._lock = asyncio.Lock()
        self._echo = False  # the module echoed our last command
        self._dirty = False  # the last command timed out: its answer may still come
        self._fail_at = 0.0
        self._guard_s = RESYNC_QUIET_S
        self._closed = False
        self._backoff = Backoff(retry or RetryPolicy())
        self.stale_lines = 0

    @classmethod
    def from_config(
        cls, cfg: SerialBus, *, on_urc: Callable[[str], None] | None = None
    ) -> AtClient:
        """A client for an ``kind = "at"`` serial bus of agent.toml (parity etc. kept)."""
        return cls(
            cfg.port, cfg.baud, name=cfg.name, on_urc=on_urc, parity=cfg.parity,
            stopbits=cfg.stopbits, bytesize=cfg.bytesize,
        )

    async def command(self, cmd: str, timeout_s: float = 5.0) -> list[str]:
        """Send ``cmd`` (e.g. ``AT+CSQ``); the answer's information lines, without echo / OK."""
        cmd = cmd.strip()
        if not cmd or not all(0x20 <= ord(c) < 0x7F for c in cmd):
            raise CodecError(f"AT command {cmd!r} must be non-empty printable ASCII")
        if self._closed:
            raise BusClosed(f"at={self.name} is closed")
        async with self._lock:
            self._ensure_open()
            if self._dirty:
                await self._wait_quiet(give_up=time.monotonic() + self._guard_s + timeout_s)
            ex = AtExchange(cmd, urc_prefixes=self._prefixes, expect_echo=self._echo)
            done = self._done = asyncio.get_running_loop().create_future()
            self._exchange = ex
            try:
                await self._port.write(cmd.encode("ascii") + b"\r")
                # the final result, a lost port or the timer resolve ``done``. Not wait_for: on
                # Python 3.11 it returns the result, dropping a cancellation (a reload stopping
                # the poller) that comes while the answer has just arrived, and the poll job
                # runs on for ever (docs/operations.md, poller_stop_stuck)
                timer = timers_for().call_later(timeout_s, resolve, done)
                try:
                    await done
                finally:
                    timer.cancel()
                if not ex.done and self._port.is_open:
                    self._unsettled(timeout_s)
                    log.warning("at_timeout at=%s cmd=%s lines=%d", self.name, cmd, len(ex.lines))
                    raise BusTimeout(f"at={self.name} {cmd}: no final result in {timeout_s}s")
            except asyncio.CancelledError:
                if not ex.done:  # cancelled before its final result: that may still come
                    self._unsettled(timeout_s)
                raise
            finally:
                self._exchange = None
                self._done = None
                if ex.stale:
                    self.stale_lines += len(ex.stale)
                    log.info("at_stale_lines at=%s cmd=%s n=%d", self.name, cmd, len(ex.stale))
            self._port.check()
            self._dirty = False
            self._echo = _echo_after(cmd, ex.echo_seen)
            if ex.error is not None:
                raise ex.error
            return ex.lines

    async def open(self) -> None:
        """Open the port now (it opens on the first command otherwise), so URCs flow at once."""
        if self._closed:
            raise BusClosed(f"at={self.name} is closed")
        async with self._lock:
            self._ensure_open()

    async def close(self) -> None:
        self._closed = True
        async with self._lock:
            self._port.close()

    def _unsettled(self, timeout_s: float) -> None:
        """A command ended without its final result (timed out, or cancelled): its answer may
        still come, so the next command first waits for a quiet line (``_wait_quiet``)."""
        self._dirty = True
        self._fail_at = time.monotonic()
        self._guard_s = max(timeout_s, RESYNC_QUIET_S)
        self._echo = False  # unknown now; don't drop a real answer next time

    def _ensure_open(self) -> None:
        self._port.ensure_open(self._backoff)

    async def _wait_quiet(self, *, give_up: float) -> None:
        """After a timeout: until nothing arrived for the guard time, counted from the failure
        or the last byte, so the late answer is dropped as unsolicited instead of taken."""
        port = self._port
        while True:
            port.poll()
            now = time.monotonic()
            remaining = max(port.last_rx, self._fail_at) + self._guard_s - now
            if remaining <= 0 or now >= give_up:
                return
            await port.wait_data(min(remaining, give_up - now))

    def _on_bytes(self, data: bytes) -> None:
        for line in self._splitter.feed(data):
            ex = self._exchange
            if ex is None:
                if is_urc(line, self._prefixes):
                    self._deliver(line)
                else:
                    self.stale_lines += 1
                    log.debug("at_unsolicited_dropped at=%s line=%r", self.name, line[:80])
                continue
            n_urcs = len(ex.urcs)
            done = ex.feed(line)
            for urc in ex.urcs[n_urcs:]:
                self._deliver(urc)
            if done and self._done is not None and not self._done.done():
                self._done.set_result(None)

    def _on_port_error(self) -> None:
        fut = self._done
        if fut is not None and not fut.done():
            fut.set_result(None)  # port lost: command() raises BusClosed from check()

    def _deliver(self, urc: str) -> None:
        if self._on_urc is not None:
            try:
                self._on_urc(urc)
            except Exception:  # a faulty consumer must not break the line
                log.exception("urc_callback_failed at=%s urc=%r", self.name, urc)
        else:
            self.urcs.append(urc)
