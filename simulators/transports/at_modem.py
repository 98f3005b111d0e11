"""A simulated NB-IoT module (Quectel BC95/BC66 class) answering AT commands on a pseudo-terminal.

The gateway opens the slave side of the pty (like /dev/ttyUSB1) with pyserial. Behaviour follows
the BC95 AT manual: characters are echoed as they arrive while echo is on (the default, ATE1); a
command line ends with CR (LF is ignored); answers are framed ``\\r\\n<info>\\r\\n`` (one line per
information line, joined by CRLF) followed by ``\\r\\nOK\\r\\n``; failures are ``\\r\\nERROR\\r\\n``
(unknown command) or ``\\r\\n+CME ERROR: <n>\\r\\n`` (bad parameter, 50 = incorrect parameters);
URCs such as ``\\r\\n+CEREG:1\\r\\n`` are never sent between an answer's lines and its final result.

Radio values come from a ``NbiotState``; AT+NUESTATS reports powers and SNR in tenths of dBm / dB
(``Signal power:-850`` is -85.0 dBm). The state's faults apply: DEAD swallows everything (no echo,
no answer), SLOW adds ``faults.slow_s`` to every answer. For tests, ``slow_s`` delays answers,
``push_urc`` emits a URC when the line is idle and ``inject_urc_mid_response`` breaks the rule above
once, putting a URC inside the next answer.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import select
import threading
import time
from collections.abc import Callable

from simulators.clock import SimClock
from simulators.devices.nbiot import HOME, ROAMING, NbiotState
from simulators.faults import DeviceFault
from simulators.transports.pty_thread import PtyThread

log = logging.getLogger(__name__)

CME_INCORRECT_PARAMETERS = 50
MANUFACTURER, MODEL, REVISION = "Quectel", "BC95-G", "Revision:BC95GJBR01A09"
EARFCN = 3518
MAX_LINE = 256  # longer command lines are answered ERROR, like the module's line buffer limit


class _Reply:
    """What a command answers: information lines, then OK / ERROR / +CME ERROR."""

    def __init__(self, lines: list[str] | None = None, final: str = "OK") -> None:
        self.lines = lines or []
        self.final = final


def _error(cme: int | None = None) -> _Reply:
    return _Reply(final="ERROR" if cme is None else f"+CME ERROR: {cme}")


class AtModem(PtyThread):
    def __init__(
        self,
        state: NbiotState,
        *,
        echo: bool = True,
        slow_s: float = 0.0,
        clock: SimClock | None = None,
        wall_time: Callable[[], float] = time.time,
        tz_quarters: int = 0,
    ) -> None:
        self.state = state
        self.echo = echo
        self.slow_s = slow_s
        self.clock = clock
        self.wall_time = wall_time
        self.tz_quarters = tz_quarters
        self.cereg_n = 0
        self.cmee = 1
        super().__init__()
        self.commands: list[str] = []  # every command line received, for tests
        self._lock = threading.Lock()
        self._rx = bytearray()
        self._lines: collections.deque[str] = collections.deque()
        self._urcs: collections.deque[str] = collections.deque()
        self._inject: collections.deque[str] = collections.deque()
        self._busy: tuple[float, bytes] | None = None  # (due, answer) being "computed"
        self._last_reg = state.reg_state
        self._t0 = time.monotonic()

    # --- public ---------------------------------------------------------------------------------

    def start(self) -> str:
        self._t0 = time.monotonic()
        self._open("at-modem")
        log.info("at_modem_started path=%s device=%s", self.path, self.state.name)
        return self.path

    def stop(self) -> None:
        if self._close():
            log.info("at_modem_stopped path=%s", self.path)

    def __enter__(self) -> AtModem:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def push_urc(self, text: str) -> None:
        """Send ``\\r\\n<text>\\r\\n`` as soon as no answer is in progress."""
        with self._lock:
            self._urcs.append(text)
        self._wake()

    def inject_urc_mid_response(self, text: str) -> None:
        """Put ``text`` between the information lines and the final result of the next answer
        (or right before the final result if it has no lines) -- what a buggy module does."""
        with self._lock:
            self._inject.append(text)

    # --- the modem thread -----------------------------------------------------------------------

    def _wake(self) -> None:
        if self._wake_w >= 0:
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"u")

    def _now_s(self) -> float:
        return self.clock.now() if self.clock is not None else time.monotonic() - self._t0

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                timeout = 0.05
                if self._busy is not None:
                    timeout = max(0.0, min(timeout, self._busy[0] - time.monotonic()))
                readable = select.select([self._master, self._wake_r], [], [], timeout)[0]
                if self._wake_r in readable:
                    os.read(self._wake_r, 64)
                if self._master in readable:
                    try:
                        data = os.read(self._master, 4096)
                    except OSError as exc:
                        log.warning("at_modem_read_failed path=%s err=%s", self.path, exc)
                        return
                    self._on_bytes(data)
                self._step()
        except Exception:
            log.exception("at_modem_crashed path=%s", self.path)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._master, view) :]

    def _on_bytes(self, data: bytes) -> None:
        if self.state.faults.kind is DeviceFault.DEAD:
            return
        if self.echo:
            self._write(data)
        for b in data:
            if b == 0x0D:
                line = self._rx.decode("ascii", errors="replace")
                self._rx.clear()
                self._lines.append(line)
            elif b == 0x0A:
                continue
            elif b in (0x08, 0x7F):
                del self._rx[-1:]
            else:
                self._rx.append(b)

    def _step(self) -> None:
        now = time.monotonic()
        if self._busy is not None and now >= self._busy[0]:
            self._write(self._busy[1])
            self._busy = None
        while self._busy is None and self._lines:
            line = self._lines.popleft()
            answer = self._handle(line)
            if answer is None:
                continue
            delay = self.slow_s
            if self.state.faults.kind is DeviceFault.SLOW:
                delay += self.state.faults.slow_s
            if delay > 0:
                self._busy = (now + delay, answer)
            else:
                self._write(answer)
        if self._busy is None:
            self._idle_work()

    def _idle_work(self) -> None:
        self.state.tick(self._now_s())
        reg = self.state.reg_state
        if reg != self._last_reg:
            log.info("at_modem_reg_change device=%s stat=%d", self.state.name, reg)
            self._last_reg = reg
            if self.cereg_n >= 1:
                self._write(f"\r\n{self._cereg_urc()}\r\n".encode())
        with self._lock:
            urcs = list(self._urcs)
            self._urcs.clear()
        for text in urcs:
            self._write(f"\r\n{text}\r\n".encode())

    # --- commands -------------------------------------------------------------------------------

    def _handle(self, line: str) -> bytes | None:
        if self.state.faults.kind is DeviceFault.DEAD:
            return None
        text = line.strip()
        if not text:
            return None  # an empty line is ignored
        self.commands.append(text)
        if len(text) > MAX_LINE or not text.upper().startswith("AT"):
            reply = _error()
        else:
            self.state.tick(self._now_s())
            reply = self._dispatch(text[2:].replace(" ", "").upper())
        log.debug("at_command device=%s cmd=%s final=%s", self.state.name, text, reply.final)
        return self._frame(reply)

    def _frame(self, reply: _Reply) -> bytes:
        lines = list(reply.lines)
        with self._lock:
            injected = list(self._inject)
            self._inject.clear()
        lines.extend(injected)
        out = "\r\n" + "\r\n".join(lines) + "\r\n" if lines else ""
        return (out + f"\r\n{reply.final}\r\n").encode()

    def _dispatch(self, cmd: str) -> _Reply:
        s = self.state
        if cmd == "":
            return _Reply()
        if cmd in ("E", "E0", "E1"):
            self.echo = cmd == "E1"
            return _Reply()
        if cmd == "I":
            return _Reply([MANUFACTURER, MODEL, REVISION])
        if cmd.startswith("+CGSN"):
            return self._cgsn(cmd[5:])
        if cmd == "+CIMI":
            return _Reply([s.imsi])
        if cmd == "+CSQ":
            return _Reply([f"+CSQ:{s.csq},99"])
        if cmd == "+CSQ=?":
            return _Reply(["+CSQ:(0-31,99),(99)"])
        if cmd.startswith("+CEREG"):
            return self._cereg(cmd[6:])
        if cmd == "+CMEE?":
            return _Reply([f"+CMEE:{self.cmee}"])
        if cmd.startswith("+CMEE="):
            return self._set_int(cmd[6:], "cmee", (0, 1))
        if cmd == "+NUESTATS":
            return _Reply(self._nuestats())
        if cmd == "+CGATT?":
            return _Reply([f"+CGATT:{1 if s.reg_state in (HOME, ROAMING) else 0}"])
        if cmd == "+CCLK?":
            return _Reply([self._cclk()])
        return _error()

    def _bad_param(self) -> _Reply:
        return _error(CME_INCORRECT_PARAMETERS if self.cmee else None)

    def _set_int(self, arg: str, attr: str, allowed: tuple[int, ...]) -> _Reply:
        if not arg.isdigit() or int(arg) not in allowed:
            return self._bad_param()
        setattr(self, attr, int(arg))
        return _Reply()

    def _cgsn(self, arg: str) -> _Reply:
        imei = self.state.imei
        if arg == "=?":
            return _Reply(["+CGSN:(0,1,2,3)"])
        values = {"": imei, "=0": imei, "=1": imei, "=2": imei[:14] + "01", "=3": "01"}
        if arg not in values:
            return self._bad_param()
        if arg in ("", "=0"):
            return _Reply([values[arg]])
        return _Reply([f"+CGSN:{values[arg]}"])

    def _cereg(self, arg: str) -> _Reply:
        if arg == "?":
            return _Reply([f"+CEREG:{self.cereg_n},{self._cereg_body()}"])
        if arg == "=?":
            return _Reply(["+CEREG:(0-5)"])
        if arg.startswith("="):
            return self._set_int(arg[1:], "cereg_n", (0, 1, 2, 3, 4, 5))
        return _error()

    def _cereg_body(self) -> str:
        s = self.state
        if self.cereg_n >= 2 and s.reg_state in (HOME, ROAMING):
            tac = (s.cell_id >> 8) & 0xFFFF
            return f'{s.reg_state},"{tac:04X}","{s.cell_id:08X}",9'
        return str(s.reg_state)

    def _cereg_urc(self) -> str:
        return f"+CEREG:{self._cereg_body()}"

    def _nuestats(self) -> list[str]:
        s = self.state
        registered = s.reg_state in (HOME, ROAMING)
        rsrq = -195 + round(max(0.0, min(34.0, s.sinr + 10.0)) * 4)  # tenths of dB, -19.5..-3.9
        return [
            f"Signal power:{round(s.rsrp * 10)}",
            f"Total power:{round((s.rsrp + 17.0) * 10)}",  # RSSI, the CSQ derivation's offset
            f"TX power:{230 if registered else -32768}",
            f"TX time:{int(s.t * 12)}",
            f"RX time:{int(s.t * 400)}",
            f"Cell ID:{s.cell_id}",
            f"ECL:{s.coverage_class}",
            f"SNR:{round(s.sinr * 10)}",
            f"EARFCN:{EARFCN}",
            f"PCI:{s.cell_id % 504}",
            f"RSRQ:{rsrq}",
            "OPERATOR MODE:4",
        ]

    def _cclk(self) -> str:
        tz = self.tz_quarters
        t = time.gmtime(self.wall_time() + tz * 900)
        sign = "+" if tz >= 0 else "-"
        return f'+CCLK:"{time.strftime("%y/%m/%d,%H:%M:%S", t)}{sign}{abs(tz):02d}"'
