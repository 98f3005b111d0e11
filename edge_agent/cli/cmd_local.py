"""Technician commands that talk to the running daemon over the control socket:

    edge-agent status | devices | read DEVICE [POINT] | write DEVICE POINT VALUE [--yes]
    edge-agent tail [--device D] [--point P] [--class C] | buffer | buffer export DEST
    edge-agent buffer import SOURCE... --broker HOST:PORT

A refusal from the daemon is one line on stderr, ``edge-agent <command>: <code>: <detail>``,
exit 1 (4 for a timeout); an unreachable daemon exits 3.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from edge_agent.cli.common import (
    EXIT_FAIL,
    EXIT_NO_DAEMON,
    EXIT_OK,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    add_common,
    emit,
    fail,
    socket_path,
    table,
)
from edge_agent.control.client import ControlClient, ControlRefused, ControlUnavailable
from edge_agent.errors import EdgeAgentError

DEVICE_OPS_TIMEOUT_S = 20.0  # read/write wait for the bus (queued behind polls, adaptive timeouts)


def _call(args: argparse.Namespace, op: str, **kw: Any) -> Any:
    """The op's result; ControlRefused when the daemon answers with an error."""
    slow = op in ("read", "write")
    with ControlClient(socket_path(args)) as c:
        return c.result(op, timeout_s=DEVICE_OPS_TIMEOUT_S if slow else None, **kw)


def _age(ns: int | None) -> str:
    if not ns:
        return "never"
    s = max(0.0, time.time() - ns / 1e9)
    return f"{s:.0f}s ago" if s < 120 else f"{s / 60:.0f}m ago"


def _status(args: argparse.Namespace) -> int:
    s = _call(args, "status")
    lines = [f"{k:<22} {v}" for k, v in s.items() if not isinstance(v, dict | list)]
    for k, v in s.items():
        if isinstance(v, dict):
            lines.append(f"{k}:")
            lines += [f"  {kk:<20} {vv}" for kk, vv in v.items()]
        elif isinstance(v, list):
            lines.append(f"{k}: " + (", ".join(map(str, v)) if v else "-"))
    emit(args, s, "\n".join(lines))
    return EXIT_OK


def _devices(args: argparse.Namespace) -> int:
    devs = _call(args, "devices")
    rows = [[d.get("name"), d.get("bus"), d.get("unit_id"), _age(d.get("last_good_ns")),
             d.get("failures"), "yes" if d.get("quarantined") else "no",
             d.get("missed_deadlines"), d.get("timeout_ms")] for d in devs]
    emit(args, devs, table(["device", "bus", "unit", "last good", "failures",
                                   "quarantined", "missed", "timeout ms"], rows))
    return EXIT_OK


def _read(args: argparse.Namespace) -> int:
    try:
        values = _call(args, "read", device=args.device, point=args.point)
    except ControlUnavailable:
        if not args.direct:
            raise
        from edge_agent.cli.direct import direct_read

        values = direct_read(args.config, args.device, args.point)
    emit(args, values, table(["point", "value"], sorted(values.items())))
    return EXIT_OK


def _write(args: argparse.Namespace) -> int:
    from edge_agent.cli.cmd_command import parse_value

    value = parse_value(args.value)
    if not args.yes:
        if not sys.stdin.isatty():
            return fail("write: refusing without --yes when not on a terminal", EXIT_USAGE)
        answer = input(f"write {args.device}.{args.point} = {value!r}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            return fail("write: cancelled")
    r = _call(args, "write", device=args.device, point=args.point, value=value)
    emit(args, r, f"{args.device}.{args.point} = {r['confirmed']!r} (confirmed by the device)")
    return EXIT_OK


def _tail(args: argparse.Namespace) -> int:
    kw = {k: v for k, v in (("device", args.device), ("point", args.point),
                            ("class", args.cls)) if v}
    with ControlClient(socket_path(args)) as c:
        readings = (m["reading"] for m in c.stream("tail", **kw) if "reading" in m)
        for n, rd in enumerate(readings, start=1):
            if args.json:
                print(json.dumps(rd), flush=True)
            else:
                t = time.strftime("%H:%M:%S", time.localtime(rd["ts_ns"] / 1e9))
                q = "" if rd["quality"] == "good" else f" [{rd['quality']} {rd['reason']}]"
                print(f"{t} {rd['device']}.{rd['point']} = {rd['value']} {rd['unit']}{q}",
                      flush=True)
            if args.count and n >= args.count:
                break
    return EXIT_OK


def _buffer(args: argparse.Namespace) -> int:
    if args.buffer_op == "import":
        from edge_agent.cli.importer import import_batches

        host, _, port = args.broker.rpartition(":")
        if not port.isdigit():
            return fail(f"buffer import: --broker {args.broker!r}: expected HOST:PORT", EXIT_USAGE)
        counts = import_batches(list(args.sources), host or "127.0.0.1", int(port),
                                prefix=args.prefix, tls_ca=args.tls_ca)
        emit(args, counts, "\n".join(f"{gw}: {n} batches published and acknowledged"
                                      for gw, n in counts.items()))
        return EXIT_OK
    if args.buffer_op == "export":
        from edge_agent.cli.exporter import export_to

        res = export_to(socket_path(args), args.dest)
        seqs = f"seq {res.first_seq}..{res.last_seq}" if res.batches else "outbox empty"
        emit(args, res.as_dict(),
             f"exported {res.batches} batches ({res.readings} readings, "
             f"{res.bytes / 1024:.1f} KiB, {seqs}) to {res.path}\n"
             f"check it with: edge-agent verify --file {res.path} --key GATEWAY.pub")
        return EXIT_OK
    r = _call(args, "buffer")
    emit(args, r, "\n".join(f"{k:<24} {v}" for k, v in r.items()))
    return EXIT_OK


def _guard(func: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        what = " ".join(x for x in (args.command, getattr(args, "buffer_op", None)) if x)
        try:
            code: int = func(args)
            return code
        except ControlUnavailable as exc:
            return fail(f"edge-agent {what}: {exc}\n(is the daemon running? "
                        "`systemctl status edge-agent`)", EXIT_NO_DAEMON)
        except ControlRefused as exc:
            return fail(f"edge-agent {what}: {exc.reason}: {exc.detail}",
                        EXIT_TIMEOUT if exc.reason in ("timeout", "BusTimeout") else EXIT_FAIL)
        except EdgeAgentError as exc:  # uplink, archive, export, direct-read refusals
            return fail(f"edge-agent {what}: {exc}", EXIT_FAIL)
        except TimeoutError:
            return fail("the daemon did not answer in time (busy bus or hung daemon; "
                        "`journalctl -u edge-agent`)", EXIT_TIMEOUT)
    return run


def register(sub: Any) -> None:
    from pathlib import Path

    p = sub.add_parser("status", help="uplink, outbox, devices, clock, last errors")
    add_common(p)
    p.set_defaults(func=_guard(_status))
    p = sub.add_parser("devices", help="one line per device: bus, unit, failures, quarantine")
    add_common(p)
    p.set_defaults(func=_guard(_devices))
    p = sub.add_parser("read", help="read a device now (through the daemon, or --direct)")
    add_common(p)
    p.add_argument("device")
    p.add_argument("point", nargs="?")
    p.add_argument("--direct", action="store_true",
                   help="when the daemon is stopped, read straight from the bus (bench work)")
    p.set_defaults(func=_guard(_read))
    p = sub.add_parser("write", help="write a point, bounded by its profile, audited")
    add_common(p)
    p.add_argument("device")
    p.add_argument("point")
    p.add_argument("value")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    p.set_defaults(func=_guard(_write))
    p = sub.add_parser("tail", help="live readings")
    add_common(p)
    p.add_argument("--device")
    p.add_argument("--point")
    p.add_argument("--class", dest="cls", help="component class, e.g. water_meter")
    p.add_argument("--count", type=int, default=0, help="stop after N readings")
    p.set_defaults(func=_guard(_tail))
    p = sub.add_parser("buffer",
                       help="outbox statistics; `buffer export DEST` to carry data away")
    add_common(p)
    bsub = p.add_subparsers(dest="buffer_op")
    e = bsub.add_parser("export", help="write the signed batches into ONE archive file at DEST "
                        "(a directory, e.g. a USB stick, or a new file name); never overwrites")
    add_common(e)
    e.add_argument("dest", type=Path)
    i = bsub.add_parser("import", help="publish exported batches (archives, or directories "
                        "DIR/<gw>/<seq>.cose) to a broker, in seq order, QoS 1 (no daemon needed)")
    i.add_argument("sources", type=Path, nargs="+", metavar="SOURCE")
    i.add_argument("--broker", required=True, help="HOST:PORT")
    i.add_argument("--prefix", default="edge")
    i.add_argument("--tls-ca")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=_guard(_buffer), buffer_op="import")
    p.set_defaults(func=_guard(_buffer), buffer_op=None)
    e.set_defaults(func=_guard(_buffer), buffer_op="export")
