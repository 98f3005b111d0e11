"""``TcpEndpoint``: the owner of one Modbus TCP endpoint (implements ``ModbusBus``).

A lean MBAP client on a plain non-blocking socket watched by the event loop (``add_reader``):
no asyncio transport or protocol, no reader task, no per-request tasks. Each request is written
at once, in its own ``send()`` (``add_writer`` only holds the rest of a partial send). Answers
are matched to their future by transaction id as they arrive; an answer with an unknown or stale
transaction id (one whose request already timed out) is discarded. At most ``cfg.concurrency``
requests are in flight.

Memory: a district has hundreds of endpoints, most idle between polls, so an endpoint holds only
its socket and a few scalars (``__slots__``); an asyncio transport (with its ``_extra`` of
sockname / peername tuples), protocol, connect lock, backoff state and pending dict would cost
~1 KiB more each. What is needed only now and then (the pending dict while a request is in
flight, the Backoff while the endpoint fails, the connect future while connecting, the unsent
rest of a partial send) exists only then.

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
import socket
import time
from collections import deque
from collections.abc import Sequence

from edge_agent.bus.mbap import (
    MAX_PDU,
    MBAP,
    check_unit,
    check_write_echo,
    read_request,
    read_values,
)
from edge_agent.bus.pdu import Pdu, write_pdu
from edge_agent.bus.tcp_socket import open_connection, read_buffer
from edge_agent.config.model import TcpBus
from edge_agent.errors import (
    BusClosed,
    BusError,
    BusTimeout,
    FrameError,
)
from edge_agent.platform.timers import timers_for
from edge_agent.profiles.model import Table
from edge_agent.retry import Backoff, RetryPolicy

log = logging.getLogger(__name__)

STALL_LIMIT = 3  # consecutive timeouts (no answer at all in between) before reconnecting
_DEFAULT_RETRY = RetryPolicy()


_Waiter = asyncio.Future[bytes]
_Pending = dict[int, tuple[_Waiter, int]]  # tid -> (future, unit)


class TcpEndpoint:
    __slots__ = (
        "_backoff", "_closed", "_connecting", "_consumed", "_inflight", "_loop", "_next_try",
        "_pending", "_rest", "_retry", "_slot_waiters", "_sock", "_stalls", "_tid", "_wbuf",
        "cfg", "discarded", "name", "reconnects",
    )

    def __init__(self, cfg: TcpBus, *, retry: RetryPolicy | None = None) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self._retry = retry or _DEFAULT_RETRY
        self._loop: asyncio.AbstractEventLoop | None = None  # the connection's loop
        self._sock: socket.socket | None = None  # connected and watched by _loop, or None
        self._rest = b""  # the start of a frame not complete yet (goes first in the next read)
        self._consumed = 0  # stream offset of the next read's first byte (_rest's), for errors
        self._wbuf: bytearray | None = None  # the unsent rest of a partial send (add_writer)
        self._pending: _Pending | None = None  # requests in flight; None when there is none
        self._tid = 0
        self._inflight = 0  # requests in flight (at most cfg.concurrency)
        # FIFO, for a free slot; made on the first wait (a deque is 0.6 KiB, and most endpoints
        # of a district never wait)
        self._slot_waiters: deque[asyncio.Future[None]] | None = None
        self._connecting: asyncio.Future[None] | None = None  # done when a connect attempt ends
        self._backoff: Backoff | None = None  # while failing; None = attempt 0 (healthy)
        self._next_try = 0.0
        self._stalls = 0
        self._closed = False
        self.discarded = 0  # answers with unknown / stale transaction ids
        self.reconnects = 0

    # -- ModbusBus -----------------------------------------------------------------------------

    async def read(
        self, unit: int, table: Table, address: int, count: int, *, timeout_s: float
    ) -> list[int]:
        key = (table, address, count)
        pdu, regs = read_request(key)
        answer = await self._transact(unit, pdu, timeout_s)
        return read_values(self.name, unit, key, pdu, regs, answer)

    async def write(
        self, unit: int, table: Table, address: int, values: Sequence[int], *, timeout_s: float
    ) -> None:
        pdu = write_pdu(table, address, values)
        check_write_echo(self.name, unit, pdu, await self._transact(unit, pdu, timeout_s))

    def min_timeout_s(self, table: Table, count: int) -> float:
        return 0.0

    async def close(self) -> None:
        self._closed = True
        self._shut()
        self._fail_all(BusClosed(f"bus={self.name} closed"))

    # -- requests ------------------------------------------------------------------------------

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

    async def _transact(self, unit: int, pdu: Pdu, timeout_s: float) -> bytes:
        """Send one request; the answer PDU (function code first). Raw: the caller checks it."""
        if not 0 <= unit <= 255:
            check_unit(unit)
        # a free slot (the common case) is taken inline: no coroutine for it
        if self._inflight < max(1, self.cfg.concurrency) and not self._slot_waiters:
            self._inflight += 1
        else:
            await self._take_slot()
        try:
            sock = self._sock or await self._connect(timeout_s)
            loop = asyncio.get_running_loop()
            pending = self._pending
            if pending is None:
                pending = self._pending = {}
            tid = self._next_tid(pending)
            fut: _Waiter = loop.create_future()
            pending[tid] = (fut, unit)
            # sent now, in its own send() (no hand-off to the next loop iteration: the scheduler
            # starts one endpoint's jobs apart, and some servers read one frame a segment)
            self._send(sock, MBAP.pack(tid, 0, len(pdu.body) + 1, unit) + pdu.body)
            handle = timers_for(loop).call_later(timeout_s, self._expire, tid, unit, pdu.fc)
            try:
                answer = await fut
            finally:
                handle.cancel()
                pending.pop(tid, None)
                if not pending and self._pending is pending:
                    self._pending = None
        finally:
            self._give_slot()
        return answer

    def _next_tid(self, pending: _Pending) -> int:
        for _ in range(0x10000):
            self._tid = (self._tid + 1) & 0xFFFF
            if self._tid not in pending:
                return self._tid
        raise BusError(f"bus={self.name}: no free transaction id")  # pragma: no cover

    def _answer(self, tid: int, unit: int, pdu: bytes) -> None:
        pending = self._pending
        entry = pending.get(tid) if pending is not None else None
        if entry is None or entry[1] != unit or not pdu:
            self.discarded += 1  # stale (its request timed out), unknown, or from the wrong unit
            log.debug("answer_discarded bus=%s tid=%d unit=%d", self.name, tid, unit)
            return
        self._stalls = 0
        if self._backoff is not None:
            self._backoff = None  # a working session: the next loss reconnects at once
        fut = entry[0]
        if not fut.done():
            fut.set_result(pdu)

    def _expire(self, tid: int, unit: int, fc: int) -> None:
        pending = self._pending
        entry = pending.pop(tid, None) if pending is not None else None
        if entry is None or entry[0].done():
            return
        entry[0].set_exception(BusTimeout(f"bus={self.name} unit={unit} fc={fc}: no answer"))
        self._stalls += 1
        if self._stalls >= STALL_LIMIT and self._sock is not None:
            log.warning("stalled bus=%s timeouts=%d reconnecting", self.name, self._stalls)
            self._lost(None, "stalled")

    def _fail_all(self, err: BusError) -> None:
        pending, self._pending = self._pending, None
        if pending:
            for fut, _unit in pending.values():
                if not fut.done():
                    fut.set_exception(err)

    # -- the connection ------------------------------------------------------------------------

    async def _connect(self, timeout_s: float) -> socket.socket:
        while self._connecting is not None:  # another request is connecting: its outcome
            await asyncio.wait((self._connecting,))  # (does not cancel it if this one is)
        if self._closed:
            raise BusClosed(f"bus={self.name} closed")
        if self._sock is not None:
            return self._sock  # another request connected meanwhile
        now = time.monotonic()
        where = f"{self.cfg.host}:{self.cfg.port}"
        if now < self._next_try:
            wait = self._next_try - now
            raise BusClosed(f"bus={self.name} endpoint={where} down, next try in {wait:.1f}s")
        loop = asyncio.get_running_loop()
        done = self._connecting = loop.create_future()
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for returns the socket and
            # drops a cancellation (a reload stopping the poller) that comes as the connect
            # completes, and the poll job runs on for ever (docs/operations.md, poller_stop_stuck)
            async with asyncio.timeout(max(timeout_s, self.cfg.timeout_max_s)):
                sock = await open_connection(loop, self.cfg.host, self.cfg.port)
        except (OSError, TimeoutError) as exc:
            delay = self._failed().next_delay()
            self._next_try = time.monotonic() + delay
            why = str(exc) or type(exc).__name__
            log.warning(
                "connect_failed bus=%s endpoint=%s err=%s retry_in=%.1f",
                self.name, where, why, delay,
            )
            raise BusClosed(f"bus={self.name} endpoint={where}: connect failed: {why}") from exc
        finally:
            self._connecting = None
            done.set_result(None)
        if self._closed:
            sock.close()
            raise BusClosed(f"bus={self.name} closed")
        self._rest = b""
        self._consumed = 0
        self._stalls = 0
        loop.add_reader(sock, self._readable)
        self._loop = loop
        self._sock = sock
        self.reconnects += 1
        log.info("connected bus=%s endpoint=%s", self.name, where)
        return sock

    def _failed(self) -> Backoff:
        """The backoff state (made on the first failure since the last answer)."""
        if self._backoff is None:
            self._backoff = Backoff(self._retry)
        return self._backoff

    def _send(self, sock: socket.socket, frame: bytes) -> None:
        if self._wbuf is not None:  # an earlier send is still partly queued: after it
            self._wbuf += frame
            return
        try:
            n = sock.send(frame)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError as exc:
            self._lost(exc)
            return
        if n < len(frame):  # the socket's buffer is full: the rest when it is writable
            self._wbuf = bytearray(frame[n:])
            assert self._loop is not None
            self._loop.add_writer(sock, self._writable)

    def _writable(self) -> None:
        sock, buf = self._sock, self._wbuf
        if sock is None or buf is None:  # pragma: no cover (the writer goes with the socket)
            return
        try:
            n = sock.send(buf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lost(exc)
            return
        del buf[:n]
        if not buf:
            self._wbuf = None
            assert self._loop is not None
            self._loop.remove_writer(sock)

    def _readable(self) -> None:
        """The loop's reader callback: read what arrived into the thread's buffer, after the
        partial frame kept from the last read, and hand each whole frame on."""
        sock = self._sock
        if sock is None:  # pragma: no cover (the reader goes with the socket)
            return
        buf, view = read_buffer()
        rest = self._rest
        try:
            if rest:  # never fills the buffer: a partial frame is shorter than MAX_FRAME
                buf[: len(rest)] = rest
                n = sock.recv_into(view[len(rest) :])
            else:
                n = sock.recv_into(view)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lost(exc)
            return
        if not n:
            self._lost(None, "closed by peer")
            return
        self._frames(buf, len(rest) + n)

    def _frames(self, buf: bytearray, n: int) -> None:
        """Split ``buf[:n]`` (the kept partial frame, then the bytes just read) into MBAP frames
        and hand each PDU on; keep the start of an incomplete last frame."""
        pos = 0
        while n - pos >= 7:
            length = (buf[pos + 4] << 8) | buf[pos + 5]
            if buf[pos + 2] or buf[pos + 3] or not 2 <= length <= MAX_PDU + 1:
                self._protocol_error(
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
            self._answer(tid, buf[pos + 6], bytes(buf[pos + 7 : end]))
            pos = end
        self._rest = bytes(buf[pos:n]) if pos < n else b""
        self._consumed += pos

    def _protocol_error(self, why: str) -> None:
        log.warning("frame_error bus=%s err=%s", self.name, why)
        self._fail_all(FrameError(f"bus={self.name}: {why}"))
        self._lost(None, "protocol error")

    def _shut(self) -> None:
        """Stop watching the socket and close it (every path that ends a connection)."""
        sock, self._sock = self._sock, None
        if sock is None:
            return
        loop = self._loop
        if loop is not None:
            loop.remove_reader(sock)
            if self._wbuf is not None:
                loop.remove_writer(sock)
        self._wbuf = None
        self._rest = b""  # (a partial answer dies with its connection)
        sock.close()

    def _lost(self, exc: OSError | None, why: str = "") -> None:
        """The connection ended (error, peer closed, or dropped by us for ``why``): close it,
        fail the requests in flight, and pace the reconnect."""
        self._shut()
        self._stalls = 0
        # first loss after a working session: reconnect at once; repeated losses back off
        first = self._backoff is None
        delay = self._failed().next_delay()
        self._next_try = time.monotonic() + (0.0 if first else delay)
        reason = str(exc) if exc else why
        log.warning("connection_lost bus=%s err=%s", self.name, reason)
        self._fail_all(BusClosed(f"bus={self.name}: connection lost: {reason}"))
