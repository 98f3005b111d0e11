"""The owner of one RS-485 line: ``SerialRtuBus`` (Modbus RTU master, one transaction at a time)
on a ``serial_port.SerialPort`` (asyncio I/O on a pyserial fd, every byte timestamped, so the bus
knows when the line last carried a byte and can keep the 3.5-character silent interval exactly).

Line discipline of ``SerialRtuBus``, per transaction, under one ``asyncio.Lock``:

1. wait until the line has been silent for t3.5 since the last byte seen (an answer, stray bytes,
   or the end of our own previous request), plus the turnaround after a broadcast. After a
   failed transaction (timeout, bad frame) the next request to the *same* unit waits until
   max(that timeout, the bus's ``timeout_max_s``) has passed since the failure (and the line was
   quiet meanwhile), so a late answer shows up and is thrown away instead of being taken for the
   next answer -- a unit asked again seconds later (a quarantine probe) waits only t3.5;
2. discard whatever arrived in between (logged), write the request;
3. feed the answer to ``RtuResponseParser`` until it yields the frame or the caller's timeout ends;
4. after a timeout with no byte heard, *hold* the line (address nobody) until the bus's
   ``late_answer_window_s`` after the request, or until the late answer came: a unit answering
   late then costs its own transaction the time, never a neighbour its answer. The late answer
   is attributed to its unit (``late.count``) and discarded. A unit whose hold heard nothing is
   known silent (dead) and its later timeouts hold nothing, so a dead unit costs one long
   timeout, not one per probe; a unit whose answer came after the window anyway (attributed
   during other traffic) has its lateness learnt and its later holds cover it
   (``late.LateAnswers``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from edge_agent.bus.late import LateAnswers
from edge_agent.bus.rtu import (
    RtuFrame,
    RtuRequest,
    RtuResponseParser,
    build_read,
    build_write,
    check_echo,
    decode_read,
)
from edge_agent.bus.serial_port import SerialPort
from edge_agent.config.model import SerialBus
from edge_agent.errors import (
    BusClosed,
    BusTimeout,
    CrcError,
    FrameError,
    ModbusException,
)
from edge_agent.profiles.model import Table
from edge_agent.retry import Backoff, RetryPolicy

log = logging.getLogger(__name__)


class SerialRtuBus:
    """Modbus RTU master owning one RS-485 line (implements ``ModbusBus``)."""

    def __init__(self, cfg: SerialBus, *, retry: RetryPolicy | None = None) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self._port = SerialPort(cfg)
        self._lock = asyncio.Lock()
        self._closed = False
        self._backoff = Backoff(retry or RetryPolicy())
        self._tx_end = 0.0  # when our last request left the wire (estimated)
        self._after_broadcast = False
        self._guard_unit = -1  # unit whose last transaction failed ...
        self._guard_s = 0.0  # ... and how long the line must be quiet before asking it again
        self._guard_since = 0.0
        self._in_step = False  # the failed transaction's late answer came during its hold
        self.transactions = 0
        self.stray_bytes = 0  # bytes discarded before a request (late answers, noise)
        self.late = LateAnswers(cfg.name, cfg.late_answer_window_s)

    # -- ModbusBus -----------------------------------------------------------------------------

    async def read(
        self, unit: int, table: Table, address: int, count: int, *, timeout_s: float
    ) -> list[int]:
        req = build_read(unit, table, address, count)
        frame = await self._transact(req, timeout_s)
        assert frame is not None  # reads are never broadcast
        return decode_read(frame, req, table)

    async def write(
        self, unit: int, table: Table, address: int, values: Sequence[int], *, timeout_s: float
    ) -> None:
        req = build_write(unit, table, address, values)
        frame = await self._transact(req, timeout_s)
        if frame is not None:
            check_echo(frame, req)

    def min_timeout_s(self, table: Table, count: int) -> float:
        n = max(1, count)
        answer = 5 + ((n + 7) // 8 if table.is_bits else 2 * n)  # unit fc count data.. crc crc
        return (8 + answer) * self.cfg.char_time_s + self.cfg.turnaround_ms / 1000.0

    async def close(self) -> None:
        self._closed = True
        async with self._lock:
            self._port.close()

    # -- one transaction -----------------------------------------------------------------------

    async def _transact(self, req: RtuRequest, timeout_s: float) -> RtuFrame | None:
        if self._closed:
            raise BusClosed(f"bus={self.name} is closed")
        async with self._lock:
            self._ensure_open()
            self.transactions += 1
            self._in_step = False
            try:
                frame = await self._exchange(req, timeout_s)
            except (BusTimeout, FrameError, asyncio.CancelledError):
                if not req.is_broadcast and not self._in_step:
                    # a late answer may still come: keep the unit guarded
                    self._guard_unit = req.unit
                    self._guard_s = max(timeout_s, self.cfg.timeout_max_s)
                    self._guard_since = time.monotonic()
                    self._tx_end = max(self._tx_end, time.monotonic())  # quiet counts from now
                raise
            return frame

    def _ensure_open(self) -> None:
        if self._port.ensure_open(self._backoff):
            self._tx_end = time.monotonic()  # treat opening as line activity: wait t3.5 first

    async def _exchange(self, req: RtuRequest, timeout_s: float) -> RtuFrame | None:
        port = self._port
        quiet = self.cfg.silent_interval_s
        if self._after_broadcast:
            quiet += self.cfg.turnaround_ms / 1000.0
        if req.unit == self._guard_unit:  # what is left of the guard since the failure
            quiet = max(quiet, self._guard_since + self._guard_s - time.monotonic())
        await self._wait_quiet(quiet, give_up=time.monotonic() + quiet + timeout_s)
        stray = self._take()
        if stray:
            self.stray_bytes += len(stray)
            log.debug("stray_bytes bus=%s n=%d before_unit=%d", self.name, len(stray), req.unit)
        self.late.addressing(req.unit)
        await port.write(req.frame)
        sent = time.monotonic()
        deadline = sent + timeout_s
        self._tx_end = sent + len(req.frame) * self.cfg.char_time_s
        self._after_broadcast = req.is_broadcast
        if req.is_broadcast:
            return None
        parser = RtuResponseParser(req)
        t35 = self.cfg.silent_interval_s
        while True:
            port.poll()
            port.check()
            data = self._take()
            if data:
                frame = parser.feed(data)
                if frame is not None:
                    return self._accept(frame, req)
            now = time.monotonic()
            # a complete candidate failed its CRC and the line then fell silent for t3.5: by RTU
            # framing the answer is over, no need to wait out the timeout
            if parser.crc_rejects and now - port.last_rx >= t35:
                self._fail(req, parser)
            if now >= deadline:
                if parser.received:
                    self._fail(req, parser)
                msg = self._describe(req, "timeout", parser)
                await self._hold(req, sent, parser)
                raise BusTimeout(msg)
            wait = deadline - now
            if parser.crc_rejects:
                wait = min(wait, port.last_rx + t35 - now)
            await port.wait_data(max(wait, 0.0))

    def _accept(self, frame: RtuFrame, req: RtuRequest) -> RtuFrame:
        if req.unit == self._guard_unit:
            self._guard_unit = -1  # an answer (even an exception) came: the unit is in step
        if frame.skipped:
            log.debug(
                "garbage_skipped bus=%s unit=%d fc=%d n=%d", self.name, req.unit, req.fc,
                frame.skipped,
            )
        if frame.exception_code is not None:
            raise ModbusException(
                frame.exception_code,
                f"bus={self.name} unit={req.unit} fc={req.fc} exception={frame.exception_code}",
            )
        return frame

    def _describe(self, req: RtuRequest, kind: str, parser: RtuResponseParser) -> str:
        why = parser.describe()
        log.debug("%s bus=%s unit=%d fc=%d %s", kind, self.name, req.unit, req.fc, why)
        return f"bus={self.name} unit={req.unit} fc={req.fc}: {why}"

    def _fail(self, req: RtuRequest, parser: RtuResponseParser) -> None:
        """Bytes came but no valid answer among them."""
        msg = self._describe(req, "frame_error", parser)
        if parser.crc_rejects:  # a whole candidate answer came and failed its CRC
            raise CrcError(msg)
        raise FrameError(msg)

    def _take(self) -> bytes:
        """What the port buffered, also shown to the late-answer watch of silent units."""
        data = self._port.take()
        if data:
            self.late.feed(data, self._port.last_rx)
        return data

    async def _hold(self, req: RtuRequest, sent: float, parser: RtuResponseParser) -> None:
        """After ``req`` timed out with no byte heard: address nobody until its late answer came
        (attributed, discarded) or the late-answer window is over (the unit is then silent)."""
        until = self.late.hold_until(req, sent, parser)
        if until is None:
            return
        port = self._port
        t0 = time.monotonic()
        try:
            while True:
                port.poll()
                port.check()
                data = self._take()
                if data and parser.feed(data) is not None:
                    self.late.attributed(req.unit, sent, port.last_rx)
                    self._in_step = True  # its answer is off the line: no guard needed
                    return
                now = time.monotonic()
                if now >= until:
                    if not parser.received:
                        self.late.found_silent(req.unit, sent, parser)
                    return  # bytes still coming: the next request waits for t3.5 of quiet
                await port.wait_data(until - now)
        finally:
            self.late.holds += 1
            self.late.hold_s += time.monotonic() - t0

    async def _wait_quiet(self, quiet_s: float, *, give_up: float) -> None:
        """Until no byte was seen for ``quiet_s`` (nor our own request sent)."""
        port = self._port
        while True:
            port.poll()
            port.check()
            now = time.monotonic()
            remaining = max(port.last_rx, self._tx_end) + quiet_s - now
            if remaining <= 0:
                return
            if now >= give_up:
                raise BusTimeout(f"bus={self.name}: line never fell silent for {quiet_s:.4f}s")
            await port.wait_data(min(remaining, give_up - now))
            stray = self._take()  # bytes during the quiet wait: late answers, noise
            if stray:
                self.stray_bytes += len(stray)
                log.debug("stray_bytes bus=%s n=%d while=quiet_wait", self.name, len(stray))
