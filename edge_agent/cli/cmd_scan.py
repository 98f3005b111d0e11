"""`edge-agent scan PORT`: find Modbus RTU unit ids on an RS-485 line, rank the profiles that fit.

The probe is one cheap read per unit id (holding register 0, one register). Any answer -- data or
a Modbus exception -- means a device is there. For each unit found, every Modbus profile is read
and ranked by what the registers hold (identity registers, plausible values: cli/scan_fit.py).

While the daemon runs and owns the line, the scan goes through the daemon's bus owner, between
its polls, at the line's settings (a --sweep, which must change them, is refused with the command
that stops the daemon). Otherwise the port is opened directly and exclusively. Ctrl-C keeps (and
prints) the units found so far.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_agent.cli.argtypes import seconds, unit_range
from edge_agent.cli.common import (
    EXIT_FAIL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    emit,
    table,
)
from edge_agent.config.model import SerialBus
from edge_agent.errors import BusClosed, BusError, ModbusException
from edge_agent.profiles.model import Profile, Protocol, Table

STANDARD_BAUDS = (9600, 19200, 38400, 57600, 115200, 4800, 2400)
PARITIES = ("N", "E", "O")


@dataclass
class Found:
    baud: int
    parity: str
    unit: int
    answer: str
    profiles: list[str] = field(default_factory=list)  # the ones that fit, best first
    ranking: list[dict[str, Any]] = field(default_factory=list)
    configured_as: str = ""  # the daemon's device on this unit, when scanned through it

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Progress:
    total: int
    done: int = 0
    refused: list[tuple[int, str, str]] = field(default_factory=list)  # baud, parity, why
    show: bool = False

    def step(self, what: str, found: int) -> None:
        self.done += 1
        if self.show:
            width = 30
            fill = width * self.done // max(1, self.total)
            sys.stderr.write(f"\r[{'#' * fill}{'.' * (width - fill)}] {self.done}/{self.total} "
                             f"{what} found {found}\x1b[K")
            sys.stderr.flush()

    def say(self, line: str) -> None:
        if self.show:
            sys.stderr.write(f"\r\x1b[K{line}\n")
            sys.stderr.flush()


async def _probe(bus: Any, unit: int, timeout: float) -> str | None:
    try:
        regs = await bus.read(unit, Table.HOLDING, 0, 1, timeout_s=timeout)
        return f"hr0={regs[0]}"
    except ModbusException as exc:
        return f"exception {exc.code}"
    except BusClosed:
        raise
    except BusError:
        return None


async def _rank(bus: Any, unit: int, profiles: dict[str, Profile], timeout: float) -> Found:
    from edge_agent.cli.scan_fit import ordered, rank

    async def read(table: Table, address: int, count: int) -> list[int]:
        regs: list[int] = await bus.read(unit, table, address, count, timeout_s=timeout)
        return regs

    fits = [await rank(name, prof, read) for name, prof in sorted(profiles.items())
            if prof.protocol is Protocol.MODBUS]
    best = ordered(fits)
    f = Found(0, "", unit, "")
    f.profiles = [x.profile for x in best if x.fits]
    f.ranking = [x.as_dict() for x in best]
    return f


async def scan_line(open_bus: Callable[[int, str], Any], combos: list[tuple[int, str]],
                    units: range, profiles: dict[str, Profile], timeout: float,
                    found: list[Found], progress: Progress,
                    configured: dict[int, str] | None = None) -> None:
    """Probe ``units`` at every (baud, parity) of ``combos``; append to ``found`` as units
    answer (so a caller interrupted half-way still has them)."""
    for baud, parity in combos:
        bus = open_bus(baud, parity)
        try:
            t = max(timeout, bus.min_timeout_s(Table.HOLDING, 1) * 2)
            for unit in units:
                try:
                    answer = await _probe(bus, unit, t)
                except BusClosed as exc:
                    progress.refused.append((baud, parity, str(exc).rpartition(": ")[2]))
                    progress.done += len(units) - (unit - units.start) - 1
                    break
                progress.step(f"{baud} {parity} unit {unit:3d}", len(found))
                if answer is None:
                    continue
                ranked = await _rank(bus, unit, profiles, max(t, 0.2))
                f = Found(baud, parity, unit, answer, ranked.profiles, ranked.ranking,
                          (configured or {}).get(unit, ""))
                found.append(f)
                progress.say(_line(f))
        finally:
            await bus.close()


def _best(f: Found) -> str:
    if not f.ranking:
        return "-"
    top = f.ranking[0]
    if not top["fits"]:
        return f"none fits (closest: {top['profile']} {top['score']:.0%})"
    ident = ", ".join(f"{k} {v}" for k, v in top["identity"].items())
    tie = [r["profile"] for r in f.ranking[1:] if r["fits"] and r["score"] == top["score"]]
    text = f"{top['profile']} {top['score']:.0%}" + (f" ({ident})" if ident else "")
    return text + (f", as good: {', '.join(tie)}" if tie else "")


def _line(f: Found) -> str:
    conf = f" [configured: {f.configured_as}]" if f.configured_as else ""
    return f"unit {f.unit} at {f.baud} {f.parity}: {f.answer}; best fit {_best(f)}{conf}"


def _render(found: list[Found], notes: list[str]) -> str:
    if not found:
        text = "no device answered"
    else:
        rows = []
        for f in found:
            # only real contenders: a profile far below the best is no alternative
            top = f.ranking[0]["score"] if f.ranking else 0.0
            others = [f"{r['profile']} {r['score']:.0%}" for r in f.ranking[1:3]
                      if r["fits"] and r["score"] >= top - 0.2]
            rows.append([f.baud, f.parity, f.unit, f.answer, _best(f),
                         ", ".join(others) or "-", f.configured_as or "-"])
        text = table(["baud", "parity", "unit", "answer", "best fit", "also fits",
                      "configured"], rows, right=(2,))
    return "\n".join([text, *(f"note: {n}" for n in notes)])


def _refusals(refused: list[tuple[int, str, str]], bauds: int) -> list[str]:
    """One note per parity the port refused at every baud, else one per combination."""
    notes = []
    for parity in PARITIES:
        mine = [(b, why) for b, p, why in refused if p == parity]
        if mine and len(mine) == bauds:
            notes.append(f"parity {parity}: the port refused it at every baud ({mine[0][1]})")
        else:
            notes += [f"{b} {parity}: the port refused it ({why})" for b, why in mine]
    return notes


def _daemon_bus(args: argparse.Namespace) -> tuple[dict[str, Any], dict[int, str]] | None:
    """The running daemon's bus for this port (and its units in use); None: not its line."""
    from edge_agent.cli.common import socket_path
    from edge_agent.control.client import ControlClient, DaemonNotRunning

    try:
        with ControlClient(socket_path(args)) as c:
            cat = c.result("catalog")
    except DaemonNotRunning:
        return None
    for b in cat["buses"]:
        port = "" if "host" in b else str(b.get("port", ""))
        if b["name"] == args.port or (port and (port == args.port or os.path.realpath(port)
                                                == os.path.realpath(args.port))):
            if b["kind"] != "rtu":
                raise CliError(f"{args.port} is the daemon's {b['kind']} bus {b['name']}, not "
                               "an RS-485 Modbus line", "", EXIT_USAGE, "unsupported")
            units = {d["unit_id"]: d["name"] for d in cat["devices"] if d["bus"] == b["name"]}
            return b, units
    return None


def _scan(args: argparse.Namespace) -> int:
    from edge_agent.errors import ConfigError
    from edge_agent.profiles.load import load_profiles
    from edge_agent.profiles.shipped import shipped_dir

    try:
        profiles = load_profiles(args.profiles if args.profiles is not None else shipped_dir())
    except ConfigError as exc:
        first = exc.problems[0] if exc.problems else exc
        raise CliError(f"the profiles do not load: {first}", f"run: edge-agent check-config "
                       f"{args.profiles or shipped_dir()}", EXIT_USAGE, "bad_profiles") from None
    owned = _daemon_bus(args)
    configured: dict[int, str] = {}
    if owned is not None:
        b, configured = owned
        stop = "stop it first: sudo systemctl stop edge-agent"
        if args.sweep:
            raise CliError(f"the daemon owns {args.port} (bus {b['name']}, {b['baud']} "
                           f"{b['parity']}): a sweep would change the line's settings under it",
                           stop, EXIT_USAGE, "daemon_owns_line")
        if (args.baud, args.parity) != (b["baud"], b["parity"]) and args.baud_given:
            raise CliError(f"the daemon runs {args.port} at {b['baud']} {b['parity']}, not "
                           f"{args.baud} {args.parity}", f"scan at its settings, or {stop}",
                           EXIT_USAGE, "daemon_owns_line")
        from edge_agent.cli.common import socket_path
        from edge_agent.cli.raw_client import DaemonBus

        sock = socket_path(args)
        combos = [(int(b["baud"]), str(b["parity"]))]
        via = f"through the daemon (bus {b['name']}, between its polls)"

        def open_bus(baud: int, parity: str) -> Any:
            return DaemonBus(sock, b["name"], probe=True)
    else:
        if not os.path.exists(args.port):
            raise CliError(f"no serial port {args.port}", "is the adapter plugged in? see: ls "
                           "/dev/ttyUSB* /dev/ttyAMA* /dev/serial/by-id", EXIT_USAGE, "no_port")
        bauds = list(STANDARD_BAUDS) if args.sweep else [args.baud]
        parities = list(PARITIES) if args.sweep else [args.parity]
        combos = [(bd, pa) for bd in bauds for pa in parities]
        via = "direct (port locked for the scan)"

        def open_bus(baud: int, parity: str) -> Any:
            from edge_agent.bus.serial_line import SerialRtuBus

            # no late-answer hold: most unit ids of a scan are absent, and holding the line
            # after each of them would stretch a 247-unit scan from seconds to minutes
            return SerialRtuBus(SerialBus(name="scan", port=args.port, baud=baud, parity=parity,
                                          timeout_max_s=args.timeout, late_answer_window_s=0.0))

    progress = Progress(len(combos) * len(args.units),
                        show=not args.json and sys.stderr.isatty())
    est = len(combos) * len(args.units) * max(args.timeout, 0.02)
    progress.say(f"scanning {args.port} {via}: units {args.units.start}-{args.units.stop - 1}"
                 f" at {len(combos)} setting(s), about {est:.0f} s; Ctrl-C stops and keeps "
                 "what was found")
    found: list[Found] = []
    interrupted = False
    t0 = time.monotonic()
    try:
        asyncio.run(scan_line(open_bus, combos, args.units, profiles, args.timeout, found,
                              progress, configured))
    except KeyboardInterrupt:
        interrupted = True
    if progress.show:
        sys.stderr.write("\r\x1b[K")
    notes = _refusals(progress.refused, len({b for b, _ in combos}))
    if combos and len(combos) > 1 and os.path.realpath(args.port).startswith("/dev/pts/"):
        notes.append(f"{args.port} is a pseudo-terminal: it has no line speed, so a unit "
                     "answers at every baud")
    if interrupted:
        notes.append(f"interrupted after {time.monotonic() - t0:.0f} s: the units found so far")
    emit(args, [f.as_dict() for f in found], _render(found, notes))
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if found else EXIT_FAIL


class _Given(argparse.Action):
    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        setattr(namespace, self.dest, values)
        namespace.baud_given = True


def register(sub: Any) -> None:
    from edge_agent.cli.common import add_common

    p = sub.add_parser("scan", help="find Modbus unit ids 1-247 on an RS-485 line and rank the "
                                    "profiles that fit", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("port", help="serial device (e.g. /dev/ttyUSB0) or the daemon's bus name")
    p.add_argument("--baud", type=int, default=9600, action=_Given,
                   help="line speed (default: %(default)s; the daemon's when it owns the line)")
    p.add_argument("--parity", choices=list(PARITIES), default="N", action=_Given,
                   help="N, E or O (default: %(default)s)")
    p.add_argument("--sweep", action="store_true",
                   help=f"try every parity at {', '.join(map(str, STANDARD_BAUDS))} baud "
                        "(daemon stopped)")
    p.add_argument("--units", type=unit_range, default=range(1, 248), metavar="LO-HI",
                   help="unit ids to probe, e.g. 5-12 (default: 1-247)")
    p.add_argument("--timeout", type=seconds, default=0.1,
                   help="seconds per probe, raised to the line's frame time "
                        "(default: %(default)s)")
    p.add_argument("--profiles", type=Path, metavar="DIR",
                   help="profiles to rank (default: the profiles shipped with the agent)")
    add_common(p)
    p.set_defaults(func=_scan, baud_given=False)
