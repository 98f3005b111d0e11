"""`edge-agent config ...`: signed configuration bundles (operators) and the pin (technicians).

    edge-agent config sign MANAGED.toml --key CONFIG_OPERATOR.key --version N
        (--gateway GW ... | --tag KEY=VALUE ...) [--profiles-dir DIR] [--not-before WHEN]
        [--ttl SECONDS] [--probation SECONDS] [--min-up-ratio R] [--note TEXT] --out FILE
    edge-agent config send FILE --broker HOST:PORT --gateway GW [--wait S] [--gateway-key PUB]
    edge-agent config show FILE [--print-config]   decode a bundle (does not verify it)
    edge-agent config show                          what the running gateway runs (control socket)
    edge-agent config pin [--reason TEXT] | unpin   the technician's local control

MANAGED.toml is agent.toml without the box's local settings (gateway_id, profiles_dir, state_dir,
runtime_dir, [keys], [rollout], [outbox] path): the bundle carries it and every profile its
devices name, read from --profiles-dir (default: the profiles shipped with the agent). `sign`
checks it as `check-config` would, except for the files it names (they are on the gateways).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from edge_agent.cli import argtypes
from edge_agent.cli.broker_login import add_login_options, login_from_args
from edge_agent.cli.common import (
    EXIT_FAIL,
    EXIT_OK,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    CliError,
    add_common,
    config_path,
    emit,
    socket_path,
)

DEFAULT_TTL_S = 7 * 86400


def _sign(args: argparse.Namespace) -> int:
    from edge_agent.errors import ConfigError, EdgeAgentError
    from edge_agent.profiles.shipped import shipped_dir
    from edge_agent.rollout.bundle import Bundle, decode_bundle, encode_bundle
    from edge_agent.rollout.effective import check_offline, referenced_profiles
    from edge_agent.trust.cose import sign1
    from edge_agent.trust.keys import kid_of, load_signing_key

    if bool(args.gateway) == bool(args.tag):
        raise CliError("no targets (or both kinds)", "give --gateway GW (repeat) or --tag "
                       "KEY=VALUE (repeat; every tag must match), not both", EXIT_USAGE,
                       "bad_argument")
    src: Path = args.managed
    try:
        text = src.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read {src}: {exc}", "give the managed agent.toml",
                       EXIT_USAGE, "not_found") from None
    try:
        key = load_signing_key(Path(args.key))
        profiles_dir = args.profiles_dir or shipped_dir()
        profiles = referenced_profiles(text, profiles_dir, str(src))
        check_offline(text, profiles, config_name=str(src), profiles_dir=str(profiles_dir))
    except ConfigError as exc:
        for p in exc.problems:
            print(p, file=sys.stderr)
        raise CliError(f"{len(exc.problems)} problem(s) in the bundle (above): nothing signed",
                       "fix them; the gateways would refuse it (config_invalid)", EXIT_FAIL,
                       "config_invalid") from None
    except EdgeAgentError as exc:
        raise CliError(str(exc), "", EXIT_USAGE, "bad_argument") from None
    now = int(time.time())
    nbf = args.not_before if args.not_before is not None else now
    bundle = Bundle(version=args.version, iat=now, nbf=nbf, exp=nbf + args.ttl, config=text,
                    profiles=profiles, targets=tuple(args.gateway or ()),
                    selector=dict(args.tag or ()), window_s=args.probation,
                    min_up_ratio=args.min_up_ratio, note=args.note or "")
    payload = encode_bundle(bundle)
    try:
        decode_bundle(payload)  # the gateway's own limits (window, ratio, names)
    except EdgeAgentError as exc:
        raise CliError(str(exc).removeprefix("malformed: "), "see --help for the limits",
                       EXIT_USAGE, "bad_argument") from None
    msg = sign1(payload, key, kid_of(key.public_key()))
    out: Path = args.out
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(msg)
        os.replace(tmp, out)
    except OSError as exc:
        raise CliError(f"cannot write {out}: {exc.strerror or exc}", "", EXIT_FAIL,
                       "os_error") from None
    print(f"wrote {out}: version {bundle.version} for {bundle.describe_target()}, "
          f"{len(profiles)} profile(s), hash sha256:{bundle.hash.hex()[:16]}, {len(msg)} bytes, "
          f"valid {_utc(nbf)} .. {_utc(bundle.exp)}")
    return EXIT_OK


def _utc(t: int) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _show(args: argparse.Namespace) -> int:
    if args.file is None:
        return _show_running(args)
    from edge_agent.cli.operator_mqtt import read_bundle

    _, d = read_bundle(args.file)
    text = d.pop("config")
    lines = [f"{k:<14} {v}" for k, v in d.items() if k != "profiles"]
    lines += [f"profile        {n} {h}" for n, h in d["profiles"].items()]
    if args.print_config:
        lines += ["", text]
    emit(args, d | ({"config": text} if args.print_config else {}), "\n".join(lines))
    return EXIT_OK


def _control(args: argparse.Namespace, op: str, **kw: Any) -> Any:
    """The op's answer; the CLI turns an unreachable daemon or a refusal into one line."""
    from edge_agent.control.client import ControlClient

    with ControlClient(socket_path(args), timeout_s=30.0) as c:
        return c.result(op, **kw)


def _render_state(s: dict[str, Any]) -> str:
    last = s.get("last_rollout") or {}
    lines = [f"source         {s['source']}" + (f" (version {s['version']})"
                                                 if s["source"] == "bundle" else ""),
             f"state          {s['state']}",
             f"hash           sha256:{s['hash']}",
             f"pinned         {'yes: ' + (s.get('pin_reason') or '-') if s['pinned'] else 'no'}",
             f"highest seen   {s['highest_version']}",
             "last rollout   " + (f"version {last.get('version')} {last.get('state')}"
                                  f"{' (' + last['reason'] + ')' if last.get('reason') else ''}"
                                  if last else "-")]
    lines += [f"profile        {n} {h}" for n, h in s.get("profiles", {}).items()]
    return "\n".join(lines)


def _show_running(args: argparse.Namespace) -> int:
    s = _control(args, "config_state")
    emit(args, s, _render_state(s))
    return EXIT_OK


def _pin(args: argparse.Namespace) -> int:
    from edge_agent.control.client import DaemonNotRunning

    pin = args.config_op == "pin"
    reason = getattr(args, "reason", None) or ""
    try:
        s = _control(args, "config_pin", pin=pin, reason=reason)
        when = ""
    except DaemonNotRunning:  # stopped or crash-looping: the pin goes into the state on disk
        from edge_agent.cli.pin_offline import pin_offline

        config = config_path(args)
        if not config.is_file():  # no box here to pin: "not running, start it" as it stands
            raise
        s = pin_offline(config, pin, reason)
        when = " (the daemon is not running: from its next start)"
    emit(args, s, ("pinned: the local config runs; bundles are declined until "
                   "`edge-agent config unpin`" if pin else
                   "unpinned: bundles are accepted again") + when + "\n" + _render_state(s))
    return EXIT_OK


def _send(args: argparse.Namespace) -> int:
    from edge_agent.cli.operator_mqtt import (
        OperatorClient,
        await_results,
        broker_failure,
        gateway_keys,
        read_bundle,
    )
    from edge_agent.errors import UplinkError
    from edge_agent.rollout.results import FINAL

    data, info = read_bundle(args.file)
    keys = gateway_keys(args.gateway_key or [])
    gw, prefix = args.gateway, args.prefix

    def progress(g: str, ans: Any) -> None:
        r = ans.result
        if not args.json:
            print(f"{g}: version {r.version} {r.state}"
                  f"{' ' + r.reason if r.reason else ''}"
                  f"{_signature_note(ans)}"
                  f"{': ' + r.detail if r.detail else ''}", flush=True)

    try:
        with OperatorClient(args.broker, login_from_args(args)) as c:
            c.subscribe(f"{prefix}/{gw}/config/res")
            c.publish(f"{prefix}/{gw}/config", data)
            got = await_results(c, prefix, info["version"], [gw], args.wait, keys, progress)
    except UplinkError as exc:
        raise CliError(*broker_failure(exc, args.broker)) from None
    if args.json:
        print(json.dumps([a.result.json() | {"verified": a.verified, "forged": a.forged}
                          for a in got.get(gw, [])], indent=2))
    answers = [a for a in got.get(gw, []) if not a.forged]
    if not answers or answers[-1].result.state not in FINAL:
        raise CliError(f"no final result from {gw} within {args.wait:g} s",
                       "is the gateway online (edge-agent fleet status)? its result comes "
                       "after the probation window: raise --wait", EXIT_TIMEOUT, "timeout")
    return EXIT_OK if answers[-1].result.state in ("committed", "unchanged") else EXIT_FAIL


def _signature_note(ans: Any) -> str:
    if ans.forged:
        return " (SIGNATURE FAILS under --gateway-key: not from this gateway, ignored)"
    return "" if ans.verified else " (unverified: no --gateway-key)"


def register(sub: Any) -> None:
    p = sub.add_parser("config", help="signed configuration bundles; pin the local config",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    csub = p.add_subparsers(dest="config_op", metavar="OP", required=True)
    s = csub.add_parser("sign", help="build and sign a configuration bundle")
    s.add_argument("managed", type=Path, metavar="MANAGED.toml",
                   help="agent.toml without the box's local settings")
    s.add_argument("--key", required=True, help="configuration operator's Ed25519 key")
    s.add_argument("--version", type=argtypes.whole(1), required=True,
                   help="configuration version, above every version the gateways have seen")
    s.add_argument("--gateway", action="append", help="target gateway id (repeat)")
    s.add_argument("--tag", action="append", type=argtypes.key_value, metavar="KEY=VALUE",
                   help="tag selector (repeat: all must match the gateway's [rollout] tags)")
    s.add_argument("--profiles-dir", type=Path, help="where the profiles are (default: shipped)")
    s.add_argument("--not-before", type=argtypes.when, metavar="WHEN",
                   help="Unix seconds, +SECONDS or ISO 8601 (default now)")
    s.add_argument("--ttl", type=argtypes.whole(1, 10 * 366 * 86400), default=DEFAULT_TTL_S,
                   help=f"seconds from not-before until it expires (default {DEFAULT_TTL_S})")
    s.add_argument("--probation", type=argtypes.whole(5, 3600), default=60, metavar="SECONDS",
                   help="probation window (5..3600, default 60)")
    s.add_argument("--min-up-ratio", type=argtypes.number(0.9, 1.0), default=0.9, metavar="R",
                   help="devices up after/before at least R (0.9..1.0, default 0.9)")
    s.add_argument("--note", help="free text for the operators")
    s.add_argument("--out", type=Path, required=True, help="where to write the bundle")
    s.set_defaults(func=_sign)
    se = csub.add_parser("send", help="publish a bundle to one gateway and wait for its result")
    se.add_argument("file")
    se.add_argument("--broker", required=True, metavar="HOST:PORT")
    se.add_argument("--gateway", required=True)
    se.add_argument("--prefix", default="edge", help="topic prefix (default edge)")
    add_login_options(se)
    se.add_argument("--gateway-key", action="append", metavar="PUB.pem",
                    help="check the results' signatures with this gateway key (repeat)")
    se.add_argument("--wait", type=argtypes.seconds, default=180.0,
                    help="seconds to wait for the final result (default 180)")
    se.add_argument("--json", action="store_true", help="machine-readable output")
    se.set_defaults(func=_send)
    sh = csub.add_parser("show", help="decode a bundle file, or what the running gateway runs")
    sh.add_argument("file", nargs="?", help="a bundle file (not verified)")
    sh.add_argument("--print-config", action="store_true", help="also print its agent.toml")
    add_common(sh, config=True)
    sh.set_defaults(func=_show)
    pi = csub.add_parser("pin", help="run the local agent.toml and decline bundles")
    pi.add_argument("--reason", help="why (reported in the gateway's status)")
    add_common(pi, config=True)
    pi.set_defaults(func=_pin)
    un = csub.add_parser("unpin", help="accept bundles again (the last good bundle runs)")
    add_common(un, config=True)
    un.set_defaults(func=_pin)
