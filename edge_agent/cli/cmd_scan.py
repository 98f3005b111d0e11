"""`edge-agent scan PORT`: find Modbus RTU unit ids on an RS-485 line, rank the profiles that fit.

The probe is one cheap read per unit id (holding register 0, one register). Any answer -- data or
a Modbus exception -- means a device is there. For each unit found, every Modbus profile is read
and ranked by what the registers hold (identity registers, plausible values: cli/scan_fit.py).

While the daemon runs and owns the line, the scan goes through the daemon's bus owner, between
its polls, at the line's settings (a --sweep, which must change them, is refused with the command
that stops the daemon). Otherwise the port is opened directly and exclusively: PORT may then also
be a bus name of the config (its port and settings, unless --baud/--parity are given). Either way
the units the config uses are shown with their device names. Ctrl-C keeps (and prints) the units
found so far, and so does a failure half-way (the daemon stopping): the finds, then the error.
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

from edge_agent.cli.argtypes import baud, seconds, unit_range
from edge_agent.cli.common import (
    EXIT_FAIL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    UnknownName,
    emit,
    table,
)
from edge_agent.cli.failure import Explained
from edge_agent.config.model import SerialBus
from edge_agent.errors import BusClosed, BusError, ModbusException, PortBusy, PortDenied
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
    configured_as: str = ""  # the device the config (or running daemon) has on this unit

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Progress:
    total: int
    done: int = 0
    refused: list[tuple[int, str, str]] = field(default_factory=list)  # baud, parity, why
    show: bool = False
    unit: int = 0  # the unit being probed (or ranked)

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
    for speed, parity in combos:
        bus = open_bus(speed, parity)
        try:
            t = max(timeout, bus.min_timeout_s(Table.HOLDING, 1) * 2)
            for unit in units:
                progress.unit = unit
                try:
                    answer = await _probe(bus, unit, t)
                except (PortDenied, PortBusy):  # no setting will open it: say why, once
                    raise
                except BusClosed as exc:
                    progress.refused.append((speed, parity, str(exc).rpartition(": ")[2]))
                    progress.done += len(units) - (unit - units.start) - 1
                    break
                progress.step(f"{speed} {parity} unit {unit:3d}", len(found))
                if answer is None:
                    continue
                ranked = await _rank(bus, unit, profiles, max(t, 0.2))
                f = Found(speed, parity, unit, answer, ranked.profiles, ranked.ranking,
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


def _daemon_catalog(args: argparse.Namespace) -> dict[str, Any] | None:
    """The running daemon's catalog; None: no daemon answers."""
    from edge_agent.cli.common import socket_path
    from edge_agent.control.client import ControlClient, DaemonNotRunning

    try:
        with ControlClient(socket_path(args)) as c:
            cat: dict[str, Any] = c.result("catalog")
            return cat
    except DaemonNotRunning:
        return None


def _bus_of(port: str, cat: dict[str, Any]) -> tuple[dict[str, Any], dict[int, str]] | None:
    """The bus of ``cat`` (a catalog) named ``port`` (its name or serial port), with the unit ids
    its devices use; None when no bus matches. CliError for a bus that is not RS-485 Modbus."""
    for b in cat["buses"]:
        dev = "" if "host" in b else str(b.get("port", ""))
        if b["name"] == port or (dev and (dev == port or os.path.realpath(dev)
                                          == os.path.realpath(port))):
            if b["kind"] != "rtu":
                raise CliError(f"{port} is the {b['kind']} bus {b['name']}, not an RS-485 "
                               "Modbus line", "scan probes serial lines; for a Modbus TCP "
                               f"device use: edge-agent modbus read {b['name']} UNIT holding 0",
                               EXIT_USAGE, "unsupported")
            units = {d["unit_id"]: d["name"] for d in cat["devices"] if d["bus"] == b["name"]}
            return b, units
    return None


def _config_catalog(args: argparse.Namespace) -> dict[str, Any] | None:
    """The config's catalog, the daemon being stopped (a config named with --config must
    load; the default one is used when it is there and readable), else None."""
    from edge_agent.cli.common import config_path
    from edge_agent.config.catalog import catalog
    from edge_agent.config.load import load_config
    from edge_agent.errors import ConfigError

    cfg = config_path(args)
    given = getattr(args, "config_given", False)
    try:
        return catalog(load_config(cfg)) if given or cfg.exists() else None
    except (ConfigError, OSError):
        if given:
            raise
        return None  # the default config, unreadable to this user: a port path still works


@dataclass
class _Plan:
    combos: list[tuple[int, str]]
    open_bus: Callable[[int, str], Any]
    via: str
    configured: dict[int, str]
    port: str


def _through_daemon(args: argparse.Namespace, b: dict[str, Any]) -> _Plan:
    from edge_agent.cli.common import socket_path
    from edge_agent.cli.raw_client import DaemonBus

    stop = "stop it first: sudo systemctl stop edge-agent"
    if args.sweep:
        raise CliError(f"the daemon owns {args.port} (bus {b['name']}, {b['baud']} "
                       f"{b['parity']}): a sweep would change the line's settings under it",
                       stop, EXIT_USAGE, "daemon_owns_line")
    if args.baud_given and (args.baud, args.parity) != (b["baud"], b["parity"]):
        raise CliError(f"the daemon runs {args.port} at {b['baud']} {b['parity']}, not "
                       f"{args.baud} {args.parity}", f"scan at its settings, or {stop}",
                       EXIT_USAGE, "daemon_owns_line")
    sock = socket_path(args)

    def open_bus(baud: int, parity: str) -> Any:
        return DaemonBus(sock, b["name"], probe=True)

    return _Plan([(int(b["baud"]), str(b["parity"]))], open_bus,
                 f"through the daemon (bus {b['name']}, between its polls)", {}, str(b["port"]))


def _direct(args: argparse.Namespace, b: dict[str, Any] | None, names: list[str]) -> _Plan:
    """Straight on the port: a bus of the config (its port and, unless given, its settings)
    or a port path. ``names``: the buses known (daemon's, config's), for "did you mean"."""
    port = str(b["port"]) if b is not None else args.port
    if b is None and not port.startswith(("/", ".")) and not os.path.exists(port):
        raise UnknownName("bus", port, names, what="give a bus name of the config or a serial "
                          "port path such as /dev/ttyUSB0")
    if not os.path.exists(port):
        what = f"no serial port {port}" + (f" (bus {b['name']} of the config)" if b else "")
        raise CliError(what, "is the adapter plugged in? see: ls /dev/ttyUSB* /dev/ttyAMA* "
                       "/dev/serial/by-id", EXIT_USAGE, "no_port")
    baud, parity = args.baud, args.parity
    if b is not None and not args.baud_given:
        baud, parity = int(b["baud"]), str(b["parity"])
    bauds = list(STANDARD_BAUDS) if args.sweep else [baud]
    parities = list(PARITIES) if args.sweep else [parity]

    def open_bus(baud: int, parity: str) -> Any:
        from edge_agent.bus.serial_line import SerialRtuBus

        # no late-answer hold: most unit ids of a scan are absent, and holding the line
        # after each of them would stretch a 247-unit scan from seconds to minutes
        return SerialRtuBus(SerialBus(name="scan", port=port, baud=baud, parity=parity,
                                      timeout_max_s=args.timeout, late_answer_window_s=0.0))

    via = "direct (port locked for the scan)" + (f", bus {b['name']} of the config" if b else "")
    return _Plan([(bd, pa) for bd in bauds for pa in parities], open_bus, via, {}, port)


def _scan(args: argparse.Namespace) -> int:
    from edge_agent.cli.common import socket_path
    from edge_agent.cli.failure import as_cli_error
    from edge_agent.errors import ConfigError
    from edge_agent.profiles.load import load_profiles
    from edge_agent.profiles.shipped import shipped_dir

    try:
        profiles = load_profiles(args.profiles if args.profiles is not None else shipped_dir())
    except ConfigError as exc:
        first = exc.problems[0] if exc.problems else exc
        raise CliError(f"the profiles do not load: {first}", f"run: edge-agent check-config "
                       f"{args.profiles or shipped_dir()}", EXIT_USAGE, "bad_profiles") from None
    cat = _daemon_catalog(args)
    owned = _bus_of(args.port, cat) if cat is not None else None
    if owned is not None:
        plan = _through_daemon(args, owned[0])
    else:
        conf = _config_catalog(args)
        owned = _bus_of(args.port, conf) if conf is not None else None
        names = [b["name"] for c in (cat, conf) if c is not None for b in c["buses"]]
        plan = _direct(args, owned[0] if owned else None, names)
    plan.configured = owned[1] if owned else {}
    combos = plan.combos
    progress = Progress(len(combos) * len(args.units),
                        show=not args.json and sys.stderr.isatty())
    est = len(combos) * len(args.units) * max(args.timeout, 0.02)
    progress.say(f"scanning {args.port} {plan.via}: units {args.units.start}-"
                 f"{args.units.stop - 1} at {len(combos)} setting(s), about {est:.0f} s; "
                 "Ctrl-C stops and keeps what was found")
    found: list[Found] = []
    interrupted = False
    failure: CliError | None = None
    t0 = time.monotonic()
    try:
        asyncio.run(scan_line(plan.open_bus, combos, args.units, profiles, args.timeout, found,
                              progress, plan.configured))
    except KeyboardInterrupt:
        interrupted = True
    except Exception as exc:  # e.g. the daemon stopped mid-scan: keep what was found
        failure = as_cli_error(exc, socket_path(args) if owned else None)
        if failure is None:
            raise
    if progress.show:
        sys.stderr.write("\r\x1b[K")
    notes = _refusals(progress.refused, len({b for b, _ in combos}))
    if combos and len(combos) > 1 and os.path.realpath(plan.port).startswith("/dev/pts/"):
        notes.append(f"{args.port} is a pseudo-terminal: it has no line speed, so a unit "
                     "answers at every baud")
    took = f"after {time.monotonic() - t0:.0f} s"
    if interrupted:
        notes.append(f"interrupted {took}: the units found so far")
    if failure is not None and not found and failure.code in ("port_not_permitted", "port_busy"):
        raise Explained(failure)  # the port did not open: nothing was scanned, nothing to keep
    if failure is not None:
        at = f" at unit {progress.unit}" if progress.unit else ""
        notes.append(f"stopped{at} {took}: the units found so far")
        if args.json:  # one JSON object: the error, with the finds
            failure.data = {"found": [f.as_dict() for f in found]}
        else:
            print(_render(found, notes), flush=True)
        raise CliError(f"the scan stopped{at}: {failure.message}", failure.hint, failure.exit,
                       failure.code, failure.data)
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
    p.add_argument("--baud", type=baud, default=9600, action=_Given,
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
