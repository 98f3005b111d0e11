"""``TcpEndpoint``: the owner of one Modbus TCP endpoint (implements ``ModbusBus``).

A lean MBAP client on an ``asyncio.Protocol`` (no reader task, no per-request tasks). Each
request is written at once, in its own ``send()``. Answers
are matched to their future by transaction id as they arrive; an answer with an unknown or stale
transaction id (one whose request already timed out) is discarded. At most ``cfg.concurrency``
requests are in flight.

Connection handling: connect on first use; when the connection fails or is lost, every request
in flight fails with ``BusClosed`` and the next request reconnects, paced by
``edge_agent.retry.Backoff`` (the first reconnect after a working session is immediate; while the
endpoint stays down, requests fail fast with ``BusClosed`` until the next attempt is due).
After ``STALL_LIMIT`` timeouts in a row with no answer in between, the connection is presumed
half-open and dropped.

Errors: BusTimeout (no answer in time), FrameError (malformed answer, wrong function code, echo
mismatch), ModbusException (exception answer), BusClosed (no connection / closed owner).
"""

from __future__ import annotations

import asyncio
import logging
import struct
import threading
import time
from collections import deque
from collections.abc import Sequence

from edge_agent.bus.rtu import Pdu, decode_bits_or_regs, read_pdu, write_pdu
from edge_agent.config.model import TcpBus
from edge_agent.errors import (
    BusClosed,
    BusError,
    BusTimeout,
    CodecError,
    FrameError,
    ModbusException,
)
from edge_agent.platform.timers import timers_for
from edge_agent.profiles.model import Table
from edge_agent.retry import Backoff, RetryPolicy

log = logging.getLogger(__name__)

STALL_LIMIT = 3  # consecutive timeouts (no answer at all in between) before reconnecting
MAX_PDU = 253
MAX_FRAME = 7 + MAX_PDU  # MBAP header (unit included) + PDU
_RECV_BUFFER = 16384  # the read buffer (one per thread): many answers a read, > 2 frames
_EMPTY = bytearray()
_LOCAL = threading.local()


def _read_buffer() -> tuple[bytearray, memoryview]:
    """This thread's read buffer for the endpoints' protocols (made on first use)."""
    try:
        return _LOCAL.buffer  # type: ignore[no-any-return]
    except AttributeError:
        buf = bytearray(_RECV_BUFFER)
        _LOCAL.buffer = (buf, memoryview(buf))
        return _LOCAL.buffer  # type: ignore[no-any-return]


_Waiter = asyncio.Future[bytes]
_MBAP = struct.Struct(">HHHB")  # transaction id, protocol 0, length, unit
_READS_MAX = 4096  # cached read PDUs (one per distinct request of all devices)
# (table, address, count) -> request PDU and, for registers, the answer's decoder; shared by all
# endpoints (a thousand devices of a few profiles ask a few dozen distinct reads)
_READS: dict[tuple[Table, int, int], tuple[Pdu, struct.Struct | None]] = {}


class _MbapProtocol(asyncio.BufferedProtocol):
    """Splits the byte stream into MBAP frames and hands each PDU to the endpoint.

    A buffered protocol: the transport reads into a buffer of ours (``recv_into``), so an answer
    costs no buffer of asyncio's ``max_size`` (256 KiB): ``sock.recv(262144)`` allocates that
    much for every read -- with glibc, an mmap and munmap per answer (~25 µs measured) unless its
    dynamic mmap threshold happens to have been raised. The buffer is one per thread, shared by
    every endpoint (a read is ``get_buffer``, ``recv_into`` and ``buffer_updated`` in one go, in
    the loop's thread): an endpoint keeps only the bytes of a partial frame, if any (a district
    of 500 endpoints would otherwise hold 2 MiB of idle buffers). Whole frames are parsed where
    they lie.
    """

    __slots__ = ("_buf", "_consumed", "_owner", "_rest", "transport")

    def __init__(self, owner: TcpEndpoint) -> None:
        self._owner = owner
        self._buf = _EMPTY  # the thread's read buffer, set by get_buffer
        self._rest = b""  # the start of a frame not complete yet (goes first in the next read)
        self._consumed = 0  # stream offset of the next read's first byte (_rest's), for errors
        self.transport: asyncio.Transport | None = None

    def send(self, frame: bytes) -> None:
        """Write a request now, in its own send() (no hand-off to the next loop iteration: the
        scheduler starts one endpoint's jobs apart, and some servers read one frame a segment)."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        buf, view = _read_buffer()
        self._buf = buf
        rest = self._rest
        if rest:  # never fills the buffer: a partial frame is shorter than MAX_FRAME
            buf[: len(rest)] = rest
        return view[len(rest) :]

    def buffer_updated(self, nbytes: int) -> None:
        buf = self._buf
        n = len(self._rest) + nbytes
        pos = 0
        while n - pos >= 7:
            length = (buf[pos + 4] << 8) | buf[pos + 5]
            if buf[pos + 2] or buf[pos + 3] or not 2 <= length <= MAX_PDU + 1:
                self._owner._protocol_error(
                    f"bad MBAP header {bytes(buf[pos : pos + 7]).hex()} "
                    f"at byte {self._consumed + pos} of the connection"
                )
                self._consumed += n
                self._rest = b""
                return
            end = pos + 6 + length
            if end > n:
                break
            tid = (buf[pos] << 8) | buf[pos + 1]
            self._owner._answer(tid, buf[pos + 6], bytes(buf[pos + 7 : end]))
            pos = end
        self._rest = bytes(buf[pos:n]) if pos < n else b""
        self._consumed += pos

    def connection_lost(self, exc: Exception | None) -> None:
        self._owner._lost(self, exc)


class TcpEndpoint:
    def __init__(self, cfg: TcpBus, *, retry: RetryPolicy | None = None) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self._proto: _MbapProtocol | None = None
        self._pending: dict[int, tuple[_Waiter, int]] = {}  # tid -> (future, unit)
        self._tid = 0
        self._inflight = 0  # requests in flight (at most cfg.concurrency)
        # FIFO, for a free slot; made on the first wait (a deque is 0.6 KiB, and most endpoints
        # of a district never wait)
        self._slot_waiters: deque[asyncio.Future[None]] | None = None
        self._connect_lock: asyncio.Lock | None = None
        self._backoff = Backoff(retry or RetryPolicy())
        self._next_try = 0.0
        self._stalls = 0
        self._drop_reason = ""  # why we aborted the connection ourselves, for the loss message
        self._closed = False
        self.discarded = 0  # answers with unknown / stale transaction ids
        self.reconnects = 0

    # -- ModbusBus -----------------------------------------------------------------------------

    async def read(
        self, unit: int, table: Table, address: int, count: int, *, timeout_s: float
    ) -> list[int]:
        key = (table, address, count)
        pdu, regs = self._read_pdu(key)
        answer = await self._transact(unit, pdu, timeout_s)
        return self._read_answer(unit, key, pdu, regs, answer)

    def _read_pdu(self, key: tuple[Table, int, int]) -> tuple[Pdu, struct.Struct | None]:
        """The request PDU of a read and, for registers, the struct of its answer (cached)."""
        cached = _READS.get(key)
        if cached is None:
            table, address, count = key
            pdu = read_pdu(table, address, count)  # CodecError for a bad range: not cached
            if len(_READS) >= _READS_MAX:
                _READS.clear()
            cached = _READS[key] = (
                pdu, None if table.is_bits else struct.Struct(f">x{count}H"))
        return cached

    def _read_answer(self, unit: int, key: tuple[Table, int, int], pdu: Pdu,
                     regs: struct.Struct | None, answer: bytes) -> list[int]:
        data = self._check_answer(unit, pdu, answer)
        if len(data) != pdu.answer_len - 1 or data[0] != pdu.answer_len - 2:
            raise FrameError(
                f"bus={self.name} unit={unit} fc={pdu.fc}: answer of {len(data) + 1} bytes "
                f"(byte count {data[0] if data else '-'}), expected {pdu.answer_len}"
            )
        if regs is not None:
            return list(regs.unpack(data))
        return decode_bits_or_regs(data, key[0], key[2])

    async def write(
        self, unit: int, table: Table, address: int, values: Sequence[int], *, timeout_s: float
    ) -> None:
        pdu = write_pdu(table, address, values)
        data = self._check_answer(unit, pdu, await self._transact(unit, pdu, timeout_s))
        if data[:4] != pdu.body[1:5]:
            raise FrameError(
                f"bus={self.name} unit={unit} fc={pdu.fc}: write echo mismatch "
                f"sent={pdu.body[1:5].hex()} echoed={data[:4].hex()}"
            )

    def min_timeout_s(self, table: Table, count: int) -> float:
        return 0.0

    async def close(self) -> None:
        self._closed = True
        proto, self._proto = self._proto, None
        if proto is not None and proto.transport is not None:
            proto.transport.close()
            await asyncio.sleep(0)  # let connection_lost run
        self._fail_all(BusClosed(f"bus={self.name} closed"))

    # -- internals -----------------------------------------------------------------------------

    @staticmethod
    def _check_unit(unit: int) -> None:
        if not 0 <= unit <= 255:
            raise CodecError(f"modbus unit id {unit} outside 0..255")

    async def _take_slot(self) -> None:
        """One of ``cfg.concurrency`` in-flight slots, first come first served (a plain counter:
        the common case, a free slot, costs no coroutine or future)."""
        if self._inflight < max(1, self.cfg.concurrency) and not self._slot_waiters:
            self._inflight += 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._slot_waiters is None:
            self._slot_waiters = deque()
        self._slot_waiters.append(fut)
        try:
            await fut  # the slot is handed over by _give_slot (the count stays taken)
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():  # handed over, then cancelled: pass it on
                self._give_slot()
            elif fut in self._slot_waiters:  # (a cancelled one may have been skipped already)
                self._slot_waiters.remove(fut)
            raise

    def _give_slot(self) -> None:
        waiters = self._slot_waiters
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)  # the slot goes to the next waiter as it is
                return
        self._inflight -= 1

    def _live_proto(self) -> _MbapProtocol | None:
        proto = self._proto
        if proto is None or proto.transport is None or proto.transport.is_closing():
            return None
        return proto

    async def _transact(self, unit: int, pdu: Pdu, timeout_s: float) -> bytes:
        """Send one request; the answer PDU (function code first). Raw: the caller checks it."""
        if not 0 <= unit <= 255:
            self._check_unit(unit)
        # a free slot (the common case) is taken inline: no coroutine for it
        if self._inflight < max(1, self.cfg.concurrency) and not self._slot_waiters:
            self._inflight += 1
        else:
            await self._take_slot()
        try:
            proto = self._live_proto() or await self._connect(timeout_s)
            loop = asyncio.get_running_loop()
            tid = self._next_tid()
            fut: _Waiter = loop.create_future()
            self._pending[tid] = (fut, unit)
            proto.send(_MBAP.pack(tid, 0, len(pdu.body) + 1, unit) + pdu.body)
            handle = timers_for(loop).call_later(timeout_s, self._expire, tid, unit, pdu.fc)
            try:
                answer = await fut
            finally:
                handle.cancel()
                self._pending.pop(tid, None)
        finally:
            self._give_slot()
        return answer

    def _check_answer(self, unit: int, pdu: Pdu, answer: bytes) -> bytes:
        """The answer's data after the function code; ModbusException / FrameError."""
        fc = answer[0]
        if fc == pdu.fc | 0x80 and len(answer) >= 2:
            raise ModbusException(
                answer[1], f"bus={self.name} unit={unit} fc={pdu.fc} exception={answer[1]}"
            )
        if fc != pdu.fc:
            raise FrameError(
                f"bus={self.name} unit={unit}: answer function code {fc}, expected {pdu.fc}"
            )
        return answer[1:]

    def _next_tid(self) -> int:
        for _ in range(0x10000):
            self._tid = (self._tid + 1) & 0xFFFF
            if self._tid not in self._pending:
                return self._tid
        raise BusError(f"bus={self.name}: no free transaction id")  # pragma: no cover

    async def _connect(self, timeout_s: float) -> _MbapProtocol:
        if self._connect_lock is None:
            self._connect_lock = asyncio.Lock()
        async with self._connect_lock:
            if self._closed:
                raise BusClosed(f"bus={self.name} closed")
            p = self._proto
            if p is not None and p.transport is not None and not p.transport.is_closing():
                return p  # another request connected meanwhile
            now = time.monotonic()
            where = f"{self.cfg.host}:{self.cfg.port}"
            if now < self._next_try:
                wait = self._next_try - now
                raise BusClosed(f"bus={self.name} endpoint={where} down, next try in {wait:.1f}s")
            loop = asyncio.get_running_loop()
            try:
                _, proto = await asyncio.wait_for(
                    loop.create_connection(
                        lambda: _MbapProtocol(self), self.cfg.host, self.cfg.port
                    ),
                    timeout=max(timeout_s, self.cfg.timeout_max_s),
                )
            except (OSError, TimeoutError) as exc:
                delay = self._backoff.next_delay()
                self._next_try = time.monotonic() + delay
                log.warning(
                    "connect_failed bus=%s endpoint=%s err=%s retry_in=%.1f",
                    self.name, where, str(exc) or type(exc).__name__, delay,
                )
                why = str(exc) or type(exc).__name__
                raise BusClosed(f"bus={self.name} endpoint={where}: connect failed: {why}") from exc
            if self._closed:
                assert proto.transport is not None
                proto.transport.close()
                raise BusClosed(f"bus={self.name} closed")
            self._proto = proto
            self._stalls = 0
            self.reconnects += 1
            log.info("connected bus=%s endpoint=%s", self.name, where)
            return proto

    def _answer(self, tid: int, unit: int, pdu: bytes) -> None:
        entry = self._pending.get(tid)
        if entry is None or entry[1] != unit or not pdu:
            self.discarded += 1  # stale (its request timed out), unknown, or from the wrong unit
            log.debug("answer_discarded bus=%s tid=%d unit=%d", self.name, tid, unit)
            return
        self._stalls = 0
        self._backoff.reset()
        fut = entry[0]
        if not fut.done():
            fut.set_result(pdu)

    def _expire(self, tid: int, unit: int, fc: int) -> None:
        entry = self._pending.pop(tid, None)
        if entry is None or entry[0].done():
            return
        entry[0].set_exception(BusTimeout(f"bus={self.name} unit={unit} fc={fc}: no answer"))
        self._stalls += 1
        if self._stalls >= STALL_LIMIT and self._proto is not None:
            log.warning("stalled bus=%s timeouts=%d reconnecting", self.name, self._stalls)
            self._drop("stalled")

    def _protocol_error(self, why: str) -> None:
        log.warning("frame_error bus=%s err=%s", self.name, why)
        self._fail_all(FrameError(f"bus={self.name}: {why}"))
        self._drop("protocol error")

    def _drop(self, why: str) -> None:
        proto, self._proto = self._proto, None
        self._stalls = 0
        self._drop_reason = why
        if proto is not None and proto.transport is not None:
            proto.transport.abort()

    def _lost(self, proto: _MbapProtocol, exc: Exception | None) -> None:
        if proto is self._proto:
            self._proto = None
        elif self._proto is not None or self._closed:
            return  # an old, already replaced connection
        # first loss after a working session: reconnect at once; repeated losses back off
        first = self._backoff.attempt == 0
        delay = self._backoff.next_delay()
        self._next_try = time.monotonic() + (0.0 if first else delay)
        why = str(exc) if exc else (self._drop_reason or "closed by peer")
        self._drop_reason = ""
        log.warning("connection_lost bus=%s err=%s", self.name, why)
        self._fail_all(BusClosed(f"bus={self.name}: connection lost: {why}"))

    def _fail_all(self, err: BusError) -> None:
        pending, self._pending = self._pending, {}
        for fut, _unit in pending.values():
            if not fut.done():
                fut.set_exception(err)
