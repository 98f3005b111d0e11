"""`edge-agent command ...`: the operator-side tool that builds and signs remote commands.

    edge-agent command sign --key OPERATOR.key --gateway GW --action write \
        --device lamp-01 --point dimming --value 40 [--ttl 300] [--counter N] [--out FILE]
    edge-agent command send FILE --broker HOST:PORT --gateway GW [--tls-ca CA] [--wait 10]
    edge-agent command show FILE       decode a command or a result (no verification)
    edge-agent command show --id ID | --recent N [--json]
                                       the results the running gateway stored (signed, durable:
                                       kept until the broker acknowledged them, and a while after)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import cbor2

from edge_agent.cli import argtypes
from edge_agent.cli.common import (
    EXIT_NO_DAEMON,
    EXIT_OK,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    CliError,
    add_common,
    emit,
    fail,
    socket_path,
    table,
)
from edge_agent.commands.model import Action, Command, encode_command
from edge_agent.errors import EdgeAgentError
from edge_agent.readings import Value
from edge_agent.trust.cose import parse1, sign1
from edge_agent.trust.keys import kid_of, load_signing_key


def parse_value(text: str) -> Value:
    low = text.lower()
    if low in ("true", "on"):
        return True
    if low in ("false", "off"):
        return False
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text


def build(args: argparse.Namespace) -> bytes:
    key = load_signing_key(Path(args.key))
    now = int(time.time())
    counter = args.counter if args.counter is not None else time.time_ns() // 1000
    cmd = Command(
        id=os.urandom(16), iat=now, exp=now + args.ttl, ctr=counter, gateway=args.gateway,
        action=Action(args.action), device=args.device or "", point=args.point or "",
        value=parse_value(args.value) if args.value is not None else None,
    )
    return sign1(encode_command(cmd), key, kid_of(key.public_key()))


def _sign(args: argparse.Namespace) -> int:
    try:
        msg = build(args)
    except (EdgeAgentError, ValueError) as exc:
        print(f"command sign: {exc}", file=sys.stderr)
        return 2
    if args.out:
        Path(args.out).write_bytes(msg)
        print(f"wrote {len(msg)} bytes to {args.out}")
    else:
        print(msg.hex())
    return 0


def _show(args: argparse.Namespace) -> int:
    if args.file is None:
        return _show_stored(args)
    if args.id is not None or args.recent is not None:
        return fail("command show: give a FILE or --id / --recent, not both", EXIT_USAGE)
    data = Path(args.file).read_bytes()
    try:
        kid, _, payload, _ = parse1(data)
    except EdgeAgentError as exc:
        print(f"command show: {exc}", file=sys.stderr)
        return 2
    m: Any = cbor2.loads(payload)

    def plain(v: Any) -> Any:
        if isinstance(v, bytes):
            return v.hex()
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        return v

    print(json.dumps({"kid": kid.hex(), "payload": plain(m)}, indent=2))
    return 0


def _show_stored(args: argparse.Namespace) -> int:
    """The daemon's stored results (control socket op ``command_results``)."""
    from edge_agent.control.client import ControlClient

    # an unreachable daemon or a refusal: the one-line failure of cli/failure.py
    with ControlClient(socket_path(args)) as c:
        rows = c.result("command_results", id=args.id, recent=args.recent)
    if args.id is not None and not rows:
        return fail(f"command show: no stored result for id {args.id}")
    human = table(["id", "decided", "ok", "reason", "signer", "acked"], [
        [r["id"], time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r["t_ns"] / 1e9)),
         r["ok"], r["reason"] or "-", r["kid"][:12] or "-", r["acked"]] for r in rows])
    emit(args, rows, human if rows else "no stored results")
    return EXIT_OK


def _send(args: argparse.Namespace) -> int:
    from edge_agent.cli.mqtt_oneshot import request_response

    data = Path(args.file).read_bytes()
    host, _, port = args.broker.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise CliError(f"--broker {args.broker!r} is not HOST:PORT",
                       "e.g. --broker mqtt.example.city:8883", EXIT_USAGE, "usage")
    try:
        res = request_response(
            host or "127.0.0.1", int(port), f"{args.prefix}/{args.gateway}/cmd",
            f"{args.prefix}/{args.gateway}/cmd/res", data, args.wait, args.tls_ca,
        )
    except (EdgeAgentError, OSError) as exc:
        raise CliError(f"cannot reach the broker: {exc}", "check --broker, the network and "
                       "--tls-ca", EXIT_NO_DAEMON, "no_broker") from None
    if res is None:
        raise CliError(f"no result within {args.wait:g} s", "is the gateway online? raise "
                       "--wait, or see it later: edge-agent command show --id ID on the gateway",
                       EXIT_TIMEOUT, "timeout")
    payload = parse1(res)[2]
    print(json.dumps({str(k): (v.hex() if isinstance(v, bytes) else v)
                      for k, v in cbor2.loads(payload).items()}))
    return 0 if cbor2.loads(payload).get(4) else 1


def register(sub: Any) -> None:
    p = sub.add_parser("command", help="build, sign, send and inspect remote commands")
    csub = p.add_subparsers(dest="command_op", metavar="OP", required=True)
    s = csub.add_parser("sign", help="build and sign a command with an operator key")
    s.add_argument("--key", required=True, help="operator Ed25519 private key (PEM, mode 0600)")
    s.add_argument("--gateway", required=True)
    s.add_argument("--action", required=True, choices=[a.value for a in Action])
    s.add_argument("--device")
    s.add_argument("--point")
    s.add_argument("--value")
    s.add_argument("--ttl", type=argtypes.whole(1, 366 * 86400), default=300,
                   help="seconds until it expires (default 300)")
    s.add_argument("--counter", type=argtypes.whole(),
                   help="per-signer counter (default: microseconds now)")
    s.add_argument("--out", help="write the COSE bytes here (default: hex on stdout)")
    s.set_defaults(func=_sign)
    sh = csub.add_parser("show", help="decode a command or result file (does not verify), or "
                         "list the results the running gateway stored")
    sh.add_argument("file", nargs="?", help="a command or result file to decode")
    sh.add_argument("--id", help="the stored results of this command id (hex)")
    sh.add_argument("--recent", type=argtypes.whole(1, 1000),
                    help="the newest N stored results (default 20)")
    add_common(sh, config=True)
    sh.set_defaults(func=_show)
    se = csub.add_parser("send", help="publish a signed command and wait for the signed result")
    se.add_argument("file")
    se.add_argument("--broker", required=True, help="HOST:PORT")
    se.add_argument("--gateway", required=True)
    se.add_argument("--prefix", default="edge")
    se.add_argument("--tls-ca")
    se.add_argument("--wait", type=argtypes.seconds, default=10.0)
    se.set_defaults(func=_send)
