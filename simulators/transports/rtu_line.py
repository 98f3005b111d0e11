"""A simulated RS-485 Modbus RTU multi-drop line on a pseudo-terminal, keeping real time.

The gateway opens the slave side of a pty (like /dev/ttyUSB0); a thread on the master side plays
every slave on the line. A pty has no baud rate, so the line models the wire itself:

* each byte from the master occupies one character time from when it arrives (or from when the
  previous byte finished, whichever is later);
* the addressed slave starts answering no earlier than the end of the request + its turnaround
  (+ ``slow_s`` under the SLOW fault), one answer at a time;
* an answer is written to the pty only once it would have fully arrived at the master, so the
  master can never see it earlier than physics allows;
* whenever the master starts a frame less than t3.5 after the end of the previous frame on the
  wire (the answer, or its own request if nobody answered), a ``Violation`` is recorded.

Other stations can share the line (``attach``): a :class:`Station` - e.g. the firmware node
behind the ``machine`` shim's UART - hears every frame on the wire with its wire start time (the
master's requests, every answer) and talks onto it with ``transmit``; its answers reach the
master like a simulated device's, and one that starts while the wire is busy is a collision
(``LineStats.collisions``).

What a simulated device answers, and its line faults, is rtu_slaves.py; the wire arithmetic and
frame parsing rtu_timing.py.
"""

from __future__ import annotations

import heapq
import logging
import os
import select
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Protocol

from edge_agent.bus.crc import crc_ok
from simulators.faults import DeviceFault
from simulators.transports.pty_thread import PtyThread
from simulators.transports.rtu_slaves import RtuDevice, answer_of, broadcast, on_the_wire
from simulators.transports.rtu_timing import (
    KNOWN_FCS,
    MAX_UNIT,
    LineTiming,
    Request,
    exception_response,
    find_request,
    parse_request,
)

log = logging.getLogger(__name__)


class Station(Protocol):
    """Another station on the line, outside the simulator, answering as ``unit_id``."""

    unit_id: int

    def hear(self, data: bytes, start: float, char_s: float) -> None:
        """``data`` is on the wire from ``start`` (``time.monotonic()``), a character each
        ``char_s`` seconds; called when the line knows of it, possibly before ``start``."""
        ...


@dataclass(frozen=True, slots=True)
class Violation:
    """The master started a frame too soon after the previous one ended on the wire."""

    time_s: float  # time.monotonic() of the offending frame's first character
    gap_s: float  # measured silence (negative: it talked over a frame still on the wire)
    required_s: float  # t3.5 of the line
    frame: str  # the offending request, decoded


@dataclass(slots=True)
class UnitStats:
    requests: int = 0
    responses: int = 0
    exceptions: int = 0  # exception responses among ``responses``
    unanswered: int = 0  # DEAD fault


@dataclass(slots=True)
class LineStats:
    requests: int = 0  # valid request frames seen, any unit
    responses: int = 0  # answers written to the pty
    ignored: int = 0  # requests for unit ids nobody on the line has
    broadcasts: int = 0
    garbage_bytes: int = 0  # bytes skipped while resynchronising
    collisions: int = 0  # a station started talking while the wire was busy
    per_unit: dict[int, UnitStats] = field(default_factory=dict)

    def copy(self) -> LineStats:
        return replace(self, per_unit={u: replace(s) for u, s in self.per_unit.items()})


@dataclass(order=True, slots=True)
class _Pending:
    due: float  # when the last bit would have arrived at the master
    tx_start: float = field(compare=False)
    data: bytes = field(compare=False)
    unit: int = field(compare=False)


class RtuLine(PtyThread):
    def __init__(
        self,
        devices: Iterable[RtuDevice],
        *,
        baud: int = 9600,
        parity: str = "N",
        stopbits: int = 1,
        bytesize: int = 8,
        turnaround_s: float = 0.005,
    ) -> None:
        self.timing = LineTiming(baud, parity, stopbits, bytesize)
        if turnaround_s < 0:
            raise ValueError(f"turnaround_s must be >= 0, got {turnaround_s}")
        self.turnaround_s = turnaround_s
        self._devices: dict[int, RtuDevice] = {}
        for dev in devices:
            if not 1 <= dev.unit_id <= MAX_UNIT:
                raise ValueError(f"device {dev.name}: unit id {dev.unit_id} outside 1..{MAX_UNIT}")
            if dev.unit_id in self._devices:
                other = self._devices[dev.unit_id].name
                raise ValueError(f"devices {other} and {dev.name} share unit id {dev.unit_id}")
            self._devices[dev.unit_id] = dev
        super().__init__()
        self._lock = threading.Lock()
        self._violations: list[Violation] = []
        self._stats = LineStats(per_unit={u: UnitStats() for u in self._devices})
        self._rx = bytearray()
        self._rx_start: list[float] = []  # wire start time of each byte in _rx
        self._byte_end = float("-inf")  # wire end of the last byte received
        self._wire_end = float("-inf")  # end of the last frame on the wire
        self._tx_free = float("-inf")  # when the last scheduled answer finishes
        self._pending: list[_Pending] = []
        self._stations: list[Station] = []
        self._inbox: list[tuple[Station, bytes, float]] = []  # station transmissions to place

    # --- public ---------------------------------------------------------------------------------

    def start(self) -> str:
        """Open the pty and start serving; returns the slave path for the gateway to open."""
        self._open("rtu-line")
        log.info(
            "rtu_line_started path=%s baud=%d parity=%s stopbits=%d units=%s",
            self.path, self.timing.baud, self.timing.parity, self.timing.stopbits,
            ",".join(str(u) for u in sorted(self._devices)),
        )
        return self.path

    def stop(self) -> None:
        if self._close():
            log.info("rtu_line_stopped path=%s", self.path)

    def __enter__(self) -> RtuLine:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def violations(self) -> list[Violation]:
        with self._lock:
            return list(self._violations)

    @property
    def stats(self) -> LineStats:
        with self._lock:
            return self._stats.copy()

    def attach(self, station: Station) -> None:
        """Put ``station`` on the line (its unit id must be free)."""
        with self._lock:
            if station.unit_id in self._devices or any(
                    s.unit_id == station.unit_id for s in self._stations):
                raise ValueError(f"unit id {station.unit_id} is already on the line")
            self._stations.append(station)
            self._stats.per_unit.setdefault(station.unit_id, UnitStats())

    def detach(self, station: Station) -> None:
        with self._lock:
            if station in self._stations:
                self._stations.remove(station)

    def transmit(self, station: Station, data: bytes, start: float) -> None:
        """``station`` puts ``data`` on the wire from ``start`` (thread-safe)."""
        with self._lock:
            self._inbox.append((station, bytes(data), start))
        if self._wake_w >= 0:
            os.write(self._wake_w, b"t")

    def _hear(self, data: bytes, start: float, source: Station | None = None) -> None:
        with self._lock:
            stations = [s for s in self._stations if s is not source]
        for s in stations:
            s.hear(data, start, self.timing.char_s)

    def clear_violations(self) -> None:
        with self._lock:
            self._violations.clear()

    # --- the line thread ------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                readable = select.select(
                    [self._master, self._wake_r], [], [], self._next_timeout()
                )[0]
                if self._wake_r in readable:
                    os.read(self._wake_r, 4096)
                self._place_station_frames()
                if self._master in readable:
                    try:
                        data = os.read(self._master, 4096)
                    except OSError as exc:
                        log.warning("rtu_line_read_failed path=%s err=%s", self.path, exc)
                        return
                    self._on_bytes(data, time.monotonic())
                self._deliver_due()
                self._check_silence()
        except Exception:  # a crash here would silently hang every master; make it loud
            log.exception("rtu_line_crashed path=%s", self.path)

    def _next_timeout(self) -> float:
        deadlines = [0.2 + time.monotonic()]
        if self._pending:
            deadlines.append(self._pending[0].due)
        if self._rx:
            deadlines.append(self._byte_end + self.timing.t35_s)
        return max(0.0, min(deadlines) - time.monotonic())

    def _place_station_frames(self) -> None:
        with self._lock:
            inbox, self._inbox = self._inbox, []
        for station, data, start in inbox:
            busy = max(self._byte_end, self._tx_free, self._wire_end)
            if start < busy:
                with self._lock:
                    self._stats.collisions += 1
                log.warning("rtu_collision path=%s unit=%d overlap_ms=%.3f", self.path,
                            station.unit_id, (busy - start) * 1e3)
            due = start + self.timing.frame_s(len(data))
            self._tx_free = max(self._tx_free, due)
            heapq.heappush(self._pending, _Pending(due, start, data, station.unit_id))
            self._hear(data, start, station)

    def _on_bytes(self, data: bytes, now: float) -> None:
        char = self.timing.char_s
        self._hear(data, max(now, self._byte_end))
        for b in data:
            start = max(now, self._byte_end)
            self._rx.append(b)
            self._rx_start.append(start)
            self._byte_end = start + char
        while True:
            found = find_request(self._rx)
            if found is None:
                break
            if found.skipped:
                self._skip(found.skipped)
            frame = bytes(self._rx[: found.length])
            start = self._rx_start[0]
            del self._rx[: found.length]
            del self._rx_start[: found.length]
            self._on_frame(frame, start)

    def _skip(self, n: int) -> None:
        log.debug("rtu_resync path=%s skipped=%s", self.path, self._rx[:n].hex())
        del self._rx[:n]
        del self._rx_start[:n]
        with self._lock:
            self._stats.garbage_bytes += n

    def _check_silence(self) -> None:
        """After t3.5 of silence a real slave drops whatever partial frame it holds."""
        if not self._rx or time.monotonic() < self._byte_end + self.timing.t35_s:
            return
        rx = bytes(self._rx)
        if len(rx) >= 4 and rx[1] not in KNOWN_FCS and rx[0] in self._devices and crc_ok(rx):
            # a whole frame with a function code this line does not implement
            start = self._rx_start[0]
            self._rx.clear()
            self._rx_start.clear()
            self._check_gap(start, f"unit={rx[0]} fc={rx[1]} (unsupported)")
            self._wire_end = max(self._wire_end, start + self.timing.frame_s(len(rx)))
            self._schedule(rx[0], exception_response(rx[0], rx[1], 1), self._wire_end, 0.0)
            return
        self._skip(len(self._rx))

    def _check_gap(self, start: float, what: str) -> None:
        prev_end = self._wire_end
        for p in self._pending:
            if p.tx_start <= start:
                prev_end = max(prev_end, p.due)
        gap = start - prev_end
        log.debug("rtu_frame path=%s t=%.6f gap_ms=%.3f %s", self.path, start, gap * 1e3, what)
        if gap < self.timing.t35_s:
            v = Violation(start, gap, self.timing.t35_s, what)
            with self._lock:
                self._violations.append(v)
            log.warning(
                "rtu_gap_violation path=%s gap_ms=%.3f required_ms=%.3f frame=%s",
                self.path, gap * 1e3, v.required_s * 1e3, what,
            )

    def _on_frame(self, frame: bytes, start: float) -> None:
        req = parse_request(frame)
        self._check_gap(start, req.describe())
        end = start + self.timing.frame_s(len(frame))
        self._wire_end = max(self._wire_end, end)
        with self._lock:
            self._stats.requests += 1
        if req.unit == 0:
            self._broadcast(req)
            return
        dev = self._devices.get(req.unit)
        if dev is None:
            with self._lock:
                if any(s.unit_id == req.unit for s in self._stations):
                    self._stats.per_unit[req.unit].requests += 1  # it answers by itself
                    return
                self._stats.ignored += 1
            log.debug("rtu_request_ignored path=%s %s", self.path, req.describe())
            return
        with self._lock:
            self._stats.per_unit[req.unit].requests += 1
        faults = dev.faults
        if faults.kind is DeviceFault.DEAD:
            with self._lock:
                self._stats.per_unit[req.unit].unanswered += 1
            return
        answer = answer_of(dev, req, frame)
        if answer[1] & 0x80:
            with self._lock:
                self._stats.per_unit[req.unit].exceptions += 1
        answer = on_the_wire(answer, faults)
        extra = faults.slow_s if faults.kind is DeviceFault.SLOW else 0.0
        self._schedule(req.unit, answer, end, extra)

    def _broadcast(self, req: Request) -> None:
        with self._lock:
            self._stats.broadcasts += 1
        broadcast(self._devices.values(), req)

    def _schedule(self, unit: int, data: bytes, req_end: float, extra_s: float) -> None:
        tx_start = max(req_end + self.turnaround_s + extra_s, self._tx_free)
        due = tx_start + self.timing.frame_s(len(data))
        self._tx_free = due
        heapq.heappush(self._pending, _Pending(due, tx_start, data, unit))
        self._hear(data, tx_start)

    def _deliver_due(self) -> None:
        while self._pending and self._pending[0].due <= time.monotonic():
            p = heapq.heappop(self._pending)
            with self._lock:  # counted first: a master may act on the answer before we continue
                self._stats.responses += 1
                if p.unit in self._stats.per_unit:
                    self._stats.per_unit[p.unit].responses += 1
            # Stamped before the write: the master cannot see the answer earlier, whereas a stamp
            # taken after it may be late by a GIL hand-over (the master often runs in-process).
            sent = time.monotonic()
            view = memoryview(p.data)
            while view:
                view = view[os.write(self._master, view) :]
            self._wire_end = max(self._wire_end, sent)
            log.debug("rtu_response path=%s t=%.6f unit=%d data=%s", self.path, sent, p.unit,
                      p.data.hex())

