"""Technician commands that talk to the running daemon over the control socket:

    edge-agent status | devices | read DEVICE [POINT] | write DEVICE POINT VALUE [--yes]
    edge-agent tail [--device D] [--point P] [--class C] | buffer | buffer export DEST
    edge-agent buffer import SOURCE... --broker HOST:PORT

Names are checked against what the daemon runs (op ``catalog``) and suggested when mistyped
(cli/catalog_names.py); values are shown with their unit, rounded to the resolution the profile
implies, with their quality (cli/point_values.py). A failure is one line (cli/common.py,
cli/failure.py): exit 1 refused or failed, 2 an unknown name or bad value, 3 no daemon, 4 no
answer in time.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from edge_agent.cli.argtypes import whole
from edge_agent.cli.catalog_names import (
    check_names,
    find_device,
    find_point,
    report_note,
    selected,
    tcp_of,
)
from edge_agent.cli.common import (
    EXIT_FAIL,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    add_common,
    config_path,
    emit,
    socket_path,
    table,
)
from edge_agent.cli.failure import Explained, as_cli_error, refused
from edge_agent.cli.humanize import age_of, report
from edge_agent.cli.point_values import (
    as_json,
    parse_for,
    reading_json,
    readings_json,
    shown,
    tail_line,
    values_table,
)
from edge_agent.control.client import (
    ControlClient,
    ControlRefused,
    ControlUnavailable,
    DaemonNotRunning,
)
from edge_agent.errors import BusError

DEVICE_OPS_TIMEOUT_S = 20.0  # read/write wait for the bus (queued behind polls, adaptive timeouts)


def _call(args: argparse.Namespace, op: str, **kw: Any) -> Any:
    """The op's result; ControlRefused when the daemon answers with an error."""
    slow = op in ("read", "write")
    with ControlClient(socket_path(args)) as c:
        return c.result(op, timeout_s=DEVICE_OPS_TIMEOUT_S if slow else None, **kw)


# -- commands --------------------------------------------------------------------------------

def _status(args: argparse.Namespace) -> int:
    s = _call(args, "status")
    emit(args, s, "\n".join(report(s)))
    return EXIT_OK


def _state(d: dict[str, Any]) -> str:
    if d.get("quarantined"):
        return "QUARANTINED"
    if d.get("consecutive_failures"):
        return "DOWN"
    return "ok" if d.get("last_good_ns") else "not polled yet"


def _last_error(d: dict[str, Any]) -> str:
    err = d.get("last_error") or ""
    if not err:
        return "-"
    return err if d.get("consecutive_failures") else f"(was: {err})"


def _devices(args: argparse.Namespace) -> int:
    devs = _call(args, "devices")
    rows = [[d.get("name"), d.get("class") or "-", d.get("bus"), d.get("unit_id"), _state(d),
             age_of(d.get("last_good_ns")), d.get("failures"), d.get("missed_deadlines"),
             f"{d.get('timeout_ms', 0):.0f}", _last_error(d)] for d in devs]
    emit(args, devs, table(["device", "class", "bus", "unit", "state", "last good", "failures",
                            "missed", "timeout ms", "last error"], rows, right=(3, 6, 7, 8)))
    return EXIT_OK


def _read(args: argparse.Namespace) -> int:
    args.json = args.json or args.readings
    try:
        cat = _call(args, "catalog")
    except ControlUnavailable as exc:
        if not args.direct:
            if isinstance(exc, DaemonNotRunning):
                raise CliError(f"the daemon is not running (nothing listens at "
                               f"{socket_path(args)})", "start it (sudo systemctl start "
                               "edge-agent), or read straight from the bus with --direct",
                               3, "no_daemon") from None
            raise
        if not isinstance(exc, DaemonNotRunning):  # it may well run: never a second master
            from edge_agent.cli.failure import unreachable

            sock = socket_path(args)
            err = unreachable(exc, sock)
            raise CliError(f"--direct refused: the daemon's socket {sock} is there but this "
                           "user may not use it, so the daemon probably runs and owns the "
                           "buses (a direct read would be a second master on them)",
                           f"to read through it, {err.hint}", err.exit, err.code) from None
        return _read_direct(args)
    dev = find_device(cat, args.device)
    if args.point:
        find_point(dev, args.point)
    try:
        judged = _call(args, "read", device=args.device, point=args.point, quality=True)
    except ControlRefused as exc:
        if exc.reason.startswith("unknown_"):  # the config changed under us (reload)
            check_names(cat, args.device, args.point)
        raise Explained(refused(exc.reason, exc.detail, tcp_of(cat, dev))) from None
    values = {k: j["value"] for k, j in judged.items()}
    quality = {k: (str(j["quality"]), str(j["reason"])) for k, j in judged.items()}
    emit(args, readings_json(dev, values, quality, args.exact) if args.readings else
         as_json(dev, values, args.exact), values_table(dev, values, quality))
    return EXIT_OK


def _read_direct(args: argparse.Namespace) -> int:
    from edge_agent.cli.direct import direct_read, load
    from edge_agent.config.catalog import catalog

    cfg = load(config_path(args))
    cat = catalog(cfg)
    dev = find_device(cat, args.device)
    if args.point:
        find_point(dev, args.point)
    try:
        got = direct_read(cfg, args.device, args.point)
    except BusError as exc:
        err = as_cli_error(exc, tcp=tcp_of(cat, dev))
        if err is None:
            raise
        raise Explained(err) from None
    quality = {k: (q.value, r) for k, (q, r) in got.quality.items()}
    emit(args, readings_json(dev, got.values, quality, args.exact) if args.readings else
         as_json(dev, got.values, args.exact), values_table(dev, got.values, quality))
    return EXIT_OK


def _write(args: argparse.Namespace) -> int:
    cat = _call(args, "catalog")
    dev = find_device(cat, args.device)
    p = find_point(dev, args.point)
    if not p.get("writable"):
        raise CliError(f"{args.device}.{args.point} is read-only",
                       "writable points of this device: " + (", ".join(
                           q["name"] for q in dev["points"] if q.get("writable")) or "none"),
                       EXIT_USAGE, "not_writable")
    value = parse_for(args.device, p, args.value)  # the words `read` shows; bounds first
    if not args.yes:
        if not sys.stdin.isatty():
            raise CliError("refusing to write without confirmation: not on a terminal",
                           "add --yes", EXIT_USAGE, "not_confirmed")
        answer = input(f"write {args.device}.{args.point} = {shown(p, value)}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            raise CliError("cancelled", "", 1, "cancelled")
    try:
        r = _call(args, "write", device=args.device, point=args.point, value=value)
    except ControlRefused as exc:
        if exc.reason.startswith("unknown_"):
            check_names(cat, args.device, args.point)
        raise Explained(refused(exc.reason, exc.detail, tcp_of(cat, dev))) from None
    emit(args, r, f"{args.device}.{args.point} = {shown(p, r['confirmed'])} "
                  "(confirmed by the device)")
    return EXIT_OK


def _tail(args: argparse.Namespace) -> int:
    cat = _call(args, "catalog")
    check_names(cat, args.device, args.point, args.cls)
    meta = {(d["name"], p["name"]): p for d in cat["devices"] for p in d["points"]}
    kw = {k: v for k, v in (("device", args.device), ("point", args.point),
                            ("class", args.cls)) if v}
    if not args.json and sys.stderr.isatty():
        what = ", ".join(f"{k} {v}" for k, v in kw.items()) or "every device"
        print(f"following {what}: readings appear as the devices report them (Ctrl-C stops)",
              file=sys.stderr)
    if not args.json:
        for note in (report_note(cat, args.device, args.point, args.cls),
                     _down_note(args, cat)):
            if note:
                print(note, file=sys.stderr, flush=True)
    try:
        with ControlClient(socket_path(args)) as c:
            try:
                stream = c.stream("tail", **kw)
                readings = (m["reading"] for m in stream if "reading" in m)
                for n, rd in enumerate(readings, start=1):
                    print(json.dumps(_tail_json(rd, meta, args.exact)) if args.json else
                          tail_line(rd, meta), flush=True)
                    if args.count and n >= args.count:
                        break
            except ControlRefused as exc:
                if exc.reason.startswith("unknown_"):
                    check_names(cat, args.device, args.point, args.cls)
                raise
    except KeyboardInterrupt:  # the way to stop following: not an error
        return EXIT_OK
    return EXIT_OK


def _tail_json(rd: dict[str, Any], meta: dict[tuple[str, str], dict[str, Any]],
               exact: bool) -> dict[str, Any]:
    """A reading of the daemon as ``read --json --readings`` prints one (rounded, age_s)."""
    return reading_json(rd["device"], meta.get((rd["device"], rd["point"])), rd["point"],
                        rd.get("value"), (str(rd["quality"]), str(rd.get("reason") or "")),
                        int(rd["ts_ns"]), exact=exact, alarm=bool(rd.get("alarm")),
                        unit=rd.get("unit"))


def _down_note(args: argparse.Namespace, cat: dict[str, Any]) -> str:
    """When every device ``tail``'s filters select is down or quarantined: say so (their
    readings come without a value until they answer again), else ""."""
    if not (args.device or args.point or args.cls):
        return ""
    picked = {d for d, _ in selected(cat, args.device, args.point, args.cls)}
    devs = [d for d in _call(args, "devices") if d.get("name") in picked]
    down = [d for d in devs if _state(d) in ("DOWN", "QUARANTINED")]
    if not devs or len(down) < len(devs):
        return ""
    first = down[0]
    if len(down) == 1:
        who = f"{first['name']} is {_state(first)} (last error: {_last_error(first)})"
        return (f"note: {who}: its readings come without a value (quality bad) until it "
                "answers again; `edge-agent devices` shows its history")
    return (f"note: the {len(down)} devices selected are all down: their readings come "
            "without a value (quality bad) until they answer again; `edge-agent devices` shows "
            "their history")


def _buffer(args: argparse.Namespace) -> int:
    if args.buffer_op == "import":
        from edge_agent.cli.importer import import_batches
        from edge_agent.errors import UplinkError

        host, _, port = args.broker.rpartition(":")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise CliError(f"--broker {args.broker!r} is not HOST:PORT",
                           "e.g. --broker mqtt.example.city:8883", EXIT_USAGE, "usage")
        try:
            counts = import_batches(list(args.sources), host or "127.0.0.1", int(port),
                                    prefix=args.prefix, tls_ca=args.tls_ca)
        except UplinkError as exc:
            raise CliError(f"import: {exc}", "the archives are only read, nothing is lost: "
                           "fix what this names (the sources, --broker HOST:PORT, --tls-ca) "
                           "and run the same import again", EXIT_FAIL, "import_failed") from None
        emit(args, counts, "\n".join(f"{gw}: {n} batches published and acknowledged" if n else
                                      f"{gw}: the archive holds no batches (exported from an "
                                      "empty outbox): nothing to publish"
                                      for gw, n in counts.items()))
        return EXIT_OK
    if args.buffer_op == "export":
        from edge_agent.cli.exporter import ExportError, export_to
        from edge_agent.cli.humanize import size

        try:
            res = export_to(socket_path(args), args.dest)
        except ExportError as exc:
            raise CliError(f"export: {exc}", "the outbox keeps every batch (an export "
                           "removes nothing): fix what this names and run it again",
                           EXIT_FAIL, "export_failed") from None
        seqs = f"seq {res.first_seq}..{res.last_seq}" if res.batches else "outbox empty"
        emit(args, res.as_dict(),
             f"exported {res.batches} batches ({res.readings} readings, "
             f"{size(res.bytes)}, {seqs}) to {res.path}\n"
             f"check it with: edge-agent verify --file {res.path} --key GATEWAY.pub")
        return EXIT_OK
    r = _call(args, "buffer")
    emit(args, r, "\n".join(report(r, width=24)))
    return EXIT_OK


def register(sub: Any) -> None:
    from pathlib import Path

    p = sub.add_parser("status", help="uplink, outbox, devices, clock, last errors")
    add_common(p)
    p.set_defaults(func=_status)
    p = sub.add_parser("devices", help="one line per device: state, last answer, failures, "
                       "last error")
    add_common(p)
    p.set_defaults(func=_devices)
    p = sub.add_parser("read", help="read a device now (through the daemon, or --direct)")
    add_common(p)
    p.add_argument("device")
    p.add_argument("point", nargs="?")
    p.add_argument("--direct", action="store_true",
                   help="when the daemon is stopped, read straight from the bus (bench work; "
                        "refused while its socket is there and this user may not use it)")
    p.add_argument("--exact", action="store_true",
                   help="with --json: values as decoded, not rounded to the point's resolution")
    p.add_argument("--readings", action="store_true",
                   help="with --json: one object per point with the fields of `tail --json` "
                        "(value, unit, quality, reason, ts_ns, age_s, alarm) instead of "
                        "{point: value}")
    p.set_defaults(func=_read)
    p = sub.add_parser("write", help="write a point, bounded by its profile, audited")
    add_common(p)
    p.add_argument("device")
    p.add_argument("point")
    p.add_argument("value")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    p.set_defaults(func=_write)
    p = sub.add_parser("tail", help="live readings")
    add_common(p)
    p.add_argument("--device")
    p.add_argument("--point")
    p.add_argument("--class", dest="cls", metavar="CLASS", help="component class, e.g. "
                   "water_meter")
    p.add_argument("--count", type=whole(1), metavar="N",
                   help="stop after N readings, N >= 1 (default: follow until Ctrl-C)")
    p.add_argument("--exact", action="store_true",
                   help="with --json: values as decoded, not rounded to the point's resolution")
    p.set_defaults(func=_tail)
    p = sub.add_parser("buffer",
                       help="outbox statistics; `buffer export DEST` to carry data away")
    add_common(p)
    bsub = p.add_subparsers(dest="buffer_op", metavar="ACTION")
    e = bsub.add_parser("export", help="write the signed batches into ONE archive file at DEST "
                        "(a directory, e.g. a USB stick, or a new file name); never overwrites")
    add_common(e)
    e.add_argument("dest", type=Path)
    i = bsub.add_parser("import", help="publish exported batches (archives, or directories "
                        "DIR/<gw>/<seq>.cose) to a broker, in seq order, QoS 1 (no daemon needed)")
    i.add_argument("sources", type=Path, nargs="+", metavar="SOURCE")
    i.add_argument("--broker", required=True, metavar="HOST:PORT")
    i.add_argument("--prefix", default="edge", help="topic prefix (default: %(default)s)")
    i.add_argument("--tls-ca", metavar="CA.pem")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=_buffer, buffer_op="import")
    p.set_defaults(func=_buffer, buffer_op=None)
    e.set_defaults(func=_buffer, buffer_op="export")
