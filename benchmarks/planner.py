"""Read-planner benchmark: requests, registers and ideal RS-485 time per poll cycle.

For every shipped Modbus profile it compares the planned reads (``profiles.planner.plan`` with the
profile's ``max_gap``) with the naive one-request-per-point plan. Time is the ideal line time of one
poll cycle at 9600 baud 8N1 (10 bits per character): every transaction costs its request and
response frames plus two 3.5-character silent intervals (after the request, after the response);
device turnaround is not counted.

    .venv/bin/python -m benchmarks.planner [--dir device_profiles] [--baud 9600] [--decode]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edge_agent.profiles.codec import decode, encode
from edge_agent.profiles.load import load_profiles
from edge_agent.profiles.model import DataType, ModbusPoint, Profile
from edge_agent.profiles.planner import ReadRequest, one_per_point, plan, rtu_frame_bytes
from edge_agent.profiles.shipped import shipped_dir

DEFAULT_DIR = shipped_dir()
BITS_PER_CHAR = 10  # 8N1: start + 8 data + stop


def cycle_seconds(requests: Sequence[ReadRequest], baud: int = 9600) -> float:
    """Ideal RTU line time of one poll cycle: frames plus two t3.5 gaps per transaction."""
    char_s = BITS_PER_CHAR / baud
    t35 = 3.5 * char_s if baud <= 19200 else 0.00175  # the spec fixes t3.5 above 19200 baud
    total = 0.0
    for r in requests:
        req, resp = rtu_frame_bytes(r.table, r.count)
        total += (req + resp) * char_s + 2 * t35
    return total


@dataclass(frozen=True, slots=True)
class Row:
    profile: str
    points: int
    requests: int
    naive_requests: int
    registers: int
    naive_registers: int
    cycle_ms: float
    naive_cycle_ms: float


def measure(profile: Profile, baud: int) -> Row:
    pts = profile.modbus_points
    planned = plan(pts, max_gap=profile.max_gap)
    naive = one_per_point(pts)
    return Row(
        profile.name,
        len(pts),
        len(planned),
        len(naive),
        sum(r.count for r in planned),
        sum(r.count for r in naive),
        cycle_seconds(planned, baud) * 1e3,
        cycle_seconds(naive, baud) * 1e3,
    )


def format_table(rows: Sequence[Row], baud: int) -> str:
    head = (
        f"{'profile':<18} {'points':>6} {'requests':>10} {'registers':>11} "
        f"{f'RS-485 ms/cycle @{baud} 8N1':>28} {'speed-up':>8}"
    )
    sub = f"{'':<18} {'':>6} {'plan/naive':>10} {'plan/naive':>11} {'plan / naive':>28} {'':>8}"
    lines = [head, sub, "-" * len(head)]
    for r in rows:
        ms = f"{r.cycle_ms:.1f} / {r.naive_cycle_ms:.1f}"
        lines.append(
            f"{r.profile:<18} {r.points:>6} {f'{r.requests}/{r.naive_requests}':>10} "
            f"{f'{r.registers}/{r.naive_registers}':>11} {ms:>28} "
            f"{r.naive_cycle_ms / r.cycle_ms:>7.2f}x"
        )
    return "\n".join(lines)


def _sample_regs(p: ModbusPoint) -> list[int]:
    if p.type is DataType.ENUM and p.enum:
        return encode(p, p.enum[0][1])
    if p.type is DataType.STRING:
        return encode(p, "X")
    if p.type in (DataType.BOOL, DataType.BIT):
        return encode(p, True)
    return [1] * p.count


def decode_ns(points: Sequence[ModbusPoint], rounds: int = 20000) -> float:
    """Mean wall time of one ``decode`` call over ``points`` (ns)."""
    cases = [(p, _sample_regs(p)) for p in points]
    t0 = time.perf_counter_ns()
    for _ in range(rounds):
        for p, regs in cases:
            decode(p, regs)
    return (time.perf_counter_ns() - t0) / (rounds * len(cases))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="benchmarks.planner", description=__doc__.split("\n")[0])
    ap.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="profile directory")
    ap.add_argument("--baud", type=int, default=9600)
    ap.add_argument("--decode", action="store_true", help="also time codec.decode per profile")
    args = ap.parse_args(argv)
    profiles = [p for _, p in sorted(load_profiles(args.dir).items()) if p.modbus_points]
    if not profiles:
        print(f"no Modbus profiles in {args.dir}", file=sys.stderr)
        return 1
    rows = [measure(p, args.baud) for p in profiles]
    total = Row(
        "TOTAL",
        sum(r.points for r in rows),
        sum(r.requests for r in rows),
        sum(r.naive_requests for r in rows),
        sum(r.registers for r in rows),
        sum(r.naive_registers for r in rows),
        sum(r.cycle_ms for r in rows),
        sum(r.naive_cycle_ms for r in rows),
    )
    print(format_table([*rows, total], args.baud))
    if args.decode:
        print()
        for p in profiles:
            print(f"decode {p.name:<18} {decode_ns(p.modbus_points):7.0f} ns/point")
    return 0


if __name__ == "__main__":
    sys.exit(main())
