"""`edge-agent scan PORT`: find Modbus RTU unit ids on an RS-485 line and suggest profiles.

The probe is one cheap read per unit id (holding register 0, one register). Any answer — data or a
Modbus exception — means a device is there. For each unit found, every Modbus profile is tried with
its own planned requests; profiles whose every request is answered are suggested.
Run it only while the daemon is stopped: two masters on one line corrupt each other's frames.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_agent.cli.argtypes import unit_range
from edge_agent.cli.common import EXIT_FAIL, EXIT_OK, EXIT_USAGE, emit, table
from edge_agent.config.model import SerialBus
from edge_agent.errors import BusError, ModbusException
from edge_agent.profiles.model import Profile, Protocol, Table
from edge_agent.profiles.planner import plan

STANDARD_BAUDS = (9600, 19200, 38400, 57600, 115200, 4800, 2400)


@dataclass
class Found:
    baud: int
    parity: str
    unit: int
    answer: str
    profiles: list[str] = field(default_factory=list)


async def _probe(bus: Any, unit: int, timeout: float) -> str | None:
    try:
        regs = await bus.read(unit, Table.HOLDING, 0, 1, timeout_s=timeout)
        return f"hr0={regs[0]}"
    except ModbusException as exc:
        return f"exception {exc.code}"
    except BusError:
        return None


async def _fits(bus: Any, unit: int, profile: Profile, timeout: float) -> bool:
    for req in plan(profile.modbus_points, max_gap=profile.max_gap):
        try:
            await bus.read(unit, req.table, req.address, req.count, timeout_s=timeout)
        except BusError:
            return False
    return True


async def scan(port: str, bauds: list[int], parities: list[str], units: range,
               profiles: dict[str, Profile], timeout: float, progress: bool) -> list[Found]:
    from edge_agent.bus.serial_line import SerialRtuBus

    found: list[Found] = []
    combos = [(b, p) for b in bauds for p in parities]
    total = len(combos) * len(units)
    done = 0
    for baud, parity in combos:
        # no late-answer hold: most unit ids of a scan are absent, and holding the line after
        # each of them would stretch a 247-unit scan from seconds to minutes
        bus = SerialRtuBus(SerialBus(name="scan", port=port, baud=baud, parity=parity,
                                     timeout_max_s=timeout, late_answer_window_s=0.0))
        try:
            t = max(timeout, bus.min_timeout_s(Table.HOLDING, 1) * 2)
            for unit in units:
                answer = await _probe(bus, unit, t)
                done += 1
                if progress:
                    width = 30
                    fill = width * done // total
                    sys.stderr.write(f"\r[{'#' * fill}{'.' * (width - fill)}] {done}/{total} "
                                     f"{baud} {parity} unit {unit:3d} found {len(found)}")
                    sys.stderr.flush()
                if answer is None:
                    continue
                f = Found(baud, parity, unit, answer)
                for name, prof in sorted(profiles.items()):
                    if prof.protocol is Protocol.MODBUS and await _fits(bus, unit, prof, t):
                        f.profiles.append(name)
                found.append(f)
        finally:
            await bus.close()
    if progress:
        sys.stderr.write("\n")
    return found


def _scan(args: argparse.Namespace) -> int:
    from edge_agent.errors import ConfigError
    from edge_agent.profiles.load import load_profiles
    from edge_agent.profiles.shipped import shipped_dir

    try:
        profiles = load_profiles(args.profiles if args.profiles is not None else shipped_dir())
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_USAGE
    bauds = list(STANDARD_BAUDS) if args.sweep else [args.baud]
    parities = ["N", "E", "O"] if args.sweep else [args.parity]
    found = asyncio.run(scan(args.port, bauds, parities, args.units, profiles, args.timeout,
                             progress=not args.json and sys.stderr.isatty()))
    rows = [[f.baud, f.parity, f.unit, f.answer, ", ".join(f.profiles) or "-"] for f in found]
    emit(args, [f.__dict__ for f in found],
         table(["baud", "parity", "unit", "answer", "profiles that fit"], rows)
         if found else "no device answered")
    return EXIT_OK if found else EXIT_FAIL


def register(sub: Any) -> None:
    p = sub.add_parser("scan", help="find Modbus unit ids 1-247 on an RS-485 line")
    p.add_argument("port", help="serial device, e.g. /dev/ttyUSB0")
    p.add_argument("--baud", type=int, default=9600)
    p.add_argument("--parity", choices=["N", "E", "O"], default="N")
    p.add_argument("--sweep", action="store_true", help="try common bauds and every parity")
    p.add_argument("--units", type=unit_range, default=range(1, 248), help="e.g. 1-247 or 5-12")
    p.add_argument("--timeout", type=float, default=0.1, help="seconds per probe")
    p.add_argument("--profiles", type=Path,
                   help="profiles to try (default: the profiles shipped with the agent)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_scan)
