"""`edge-agent fleet ...`: the operator's view of every gateway, and rollouts in waves.

    edge-agent fleet status --broker HOST:PORT [--prefix edge] [--json] [--expect-version N]
        [--silent-after S] [--backlog N] [--wait S]
    edge-agent fleet rollout BUNDLE --broker HOST:PORT [--canary GW ...] [--wave-size N]
        [--timeout S] [--gateway-key PUB ...] [--json]

`status` reads every gateway's retained status (`<prefix>/+/status`) and prints one row per
gateway; flags: silent, behind, rolled_back, backlogged, pinned, probation. Exit 1 when any
gateway is silent, behind, rolled back or backlogged.

`rollout` sends a signed bundle (`edge-agent config sign`) to the gateways it addresses -- its
gateway ids, or every gateway whose status tags match its selector (an offline box's last will
keeps its tags) -- in waves: the canaries first (--canary, else the gateways tagged wave=canary,
else the first), then --wave-size at a time, each bundle retained on the gateway's config topic.
Each wave waits for every gateway's final result (committed, rolled back, refused); the rollout
stops at the first rollback, refusal or gateway that does not answer, and at a pinned canary (no
evidence; a pinned gateway elsewhere is reported "pinned" and the rollout goes on). Gateways
already at or past the version are not sent to; offline ones get the retained bundle once every
wave passed and are reported "pending" (they take it when they reconnect). Exit 0 when every
addressed gateway runs the version, else 1.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from edge_agent.cli import argtypes
from edge_agent.cli.broker_login import add_login_options, login_from_args
from edge_agent.cli.common import EXIT_FAIL, EXIT_OK, CliError, table


def _status(args: argparse.Namespace) -> int:
    from edge_agent.cli.fleet_view import HEADERS, Thresholds, rows, table_rows
    from edge_agent.cli.operator_mqtt import OperatorClient, broker_failure, statuses
    from edge_agent.errors import UplinkError

    try:
        with OperatorClient(args.broker, login_from_args(args)) as c:
            found = statuses(c, args.prefix, args.wait)
    except UplinkError as exc:
        raise CliError(*broker_failure(exc, args.broker)) from None
    rs = rows(found, Thresholds(args.silent_after, args.backlog, args.expect_version))
    bad = [r for r in rs if {"silent", "behind", "rolled_back", "backlogged"} & set(r.flags)]
    if args.json:
        print(json.dumps({"gateways": [r.json() for r in rs],
                          "flagged": [r.gateway for r in bad]}, indent=2))
    elif not rs:
        print(f"no gateway status under {args.prefix}/+/status")
    else:
        print(table(HEADERS, table_rows(rs)))
        print(f"{len(rs)} gateway(s), {len(bad)} flagged")
    return EXIT_FAIL if bad else EXIT_OK


def _rollout(args: argparse.Namespace) -> int:
    from edge_agent.cli.fleet_view import Thresholds, plan_waves, rows
    from edge_agent.cli.operator_mqtt import (
        OperatorClient,
        broker_failure,
        gateway_keys,
        read_bundle,
        statuses,
    )
    from edge_agent.errors import UplinkError

    data, info = read_bundle(args.bundle)
    keys = gateway_keys(args.gateway_key or [])
    version: int = info["version"]
    timeout = args.timeout if args.timeout is not None else info["probation_s"] + 90.0
    outcome: dict[str, dict[str, Any]] = {}
    try:
        with OperatorClient(args.broker, login_from_args(args)) as c:
            rs = {r.gateway: r for r in rows(statuses(c, args.prefix, args.wait),
                                             Thresholds(silent_after_s=args.silent_after))}
            if info["targets"]:
                addressed = list(info["targets"])
            else:
                sel = info["selector"]
                addressed = [g for g, r in rs.items()
                             if all(r.tags.get(k) == v for k, v in sel.items())]
            candidates, offline = [], []
            for g in addressed:
                r = rs.get(g)
                if r is not None and r.version >= version:
                    outcome[g] = {"outcome": "already", "reason": f"runs version {r.version}"}
                elif r is None or "silent" in r.flags:
                    offline.append(g)
                else:
                    candidates.append(g)
            canaries = args.canary or [g for g in candidates
                                       if rs[g].tags.get("wave") == "canary"]
            stopped = ""
            away = [g for g in args.canary or [] if g not in candidates]
            if away:  # no evidence from the canary the operator chose: ask, do not guess
                why = {g: outcome[g]["reason"] if g in outcome else
                       "offline" if g in offline else "not addressed" for g in away}
                stopped = (f"canary {', '.join(away)} cannot take version {version} now ("
                           + "; ".join(f"{g}: {w}" for g, w in why.items())
                           + "); choose another --canary")
            waves = plan_waves(candidates, canaries, args.wave_size)
            for n, wave in enumerate(waves, 1):
                if stopped:
                    for g in wave:
                        outcome[g] = {"outcome": "not_sent", "reason": stopped, "wave": n}
                    continue
                if not args.json:
                    print(f"wave {n}: {', '.join(wave)}", flush=True)
                stopped = _wave(c, args, data, version, wave, n, timeout, keys, outcome)
            for g in offline:
                r = rs.get(g)
                if stopped:
                    outcome[g] = {"outcome": "not_sent", "reason": stopped}
                    continue
                # retained: the box takes it when it connects again (and ignores it once passed)
                c.publish(f"{args.prefix}/{g}/config", data, retain=True)
                seen = "no status yet" if r is None else f"offline, last seen {r.seen_ago()} ago"
                outcome[g] = {"outcome": "pending", "reason": f"{seen}: bundle retained on "
                              f"{args.prefix}/{g}/config, applied when it reconnects"}
    except UplinkError as exc:
        raise CliError(*broker_failure(exc, args.broker)) from None
    done = all(o["outcome"] in ("committed", "unchanged", "already") for o in outcome.values())
    pending = sorted(g for g, o in outcome.items() if o["outcome"] == "pending")
    if args.json:
        print(json.dumps({"version": version, "stopped": stopped, "complete": done,
                          "pending": pending, "gateways": outcome}, indent=2, default=str))
    else:
        print(table(["gateway", "wave", "outcome", "reason"],
                    [[g, o.get("wave", "-"), o["outcome"] + _mark(o), o.get("reason") or "-"]
                     for g, o in sorted(outcome.items())]))
        if stopped:
            print(f"rollout of version {version} stopped: {stopped}")
        elif not outcome:
            print(f"no gateway is addressed by version {version}")
        if pending:
            print(f"pending (offline; each takes version {version} when it reconnects: "
                  f"edge-agent fleet status shows it): {', '.join(pending)}")
    return EXIT_OK if done and outcome else EXIT_FAIL


def _wave(c: Any, args: argparse.Namespace, data: bytes, version: int, wave: list[str], n: int,
          timeout: float, keys: Any, outcome: dict[str, dict[str, Any]]) -> str:
    """Send one wave (retained per gateway), wait for its results, fill ``outcome``; why the
    rollout stops ("" to go on). Wave 1 is the canaries: a pinned canary gave no evidence."""
    from edge_agent.cli.operator_mqtt import await_results

    stopped = ""
    for g in wave:
        c.subscribe(f"{args.prefix}/{g}/config/res")
    for g in wave:
        c.publish(f"{args.prefix}/{g}/config", data, retain=True)
    got = await_results(c, args.prefix, version, wave, timeout, keys)
    for g in wave:
        answers = got.get(g) or []
        good = [a for a in answers if not a.forged]
        forged = len(answers) - len(good)
        if not good:
            if forged:
                outcome[g] = {"outcome": "unverified", "wave": n, "verified": False,
                              "reason": f"{forged} result(s) whose signature does not verify "
                              "under the --gateway-key given"}
                stopped = stopped or f"{g}: its results fail their signature"
            else:
                outcome[g] = {"outcome": "no_answer", "reason": f"{timeout:g} s", "wave": n}
                stopped = stopped or f"{g} did not answer"
            continue
        ans = good[-1]
        res = ans.result
        state = "pinned" if (res.state, res.reason) == ("refused", "pinned") else res.state
        outcome[g] = {"outcome": state, "reason": res.reason, "wave": n, "detail": res.detail,
                      "evidence": res.evidence, "verified": ans.verified}
        if forged:
            outcome[g]["forged_results"] = forged
        if state in ("rolled_back", "refused", "pinned"):  # no retained bundle left behind
            c.publish(f"{args.prefix}/{g}/config", b"", retain=True)
        if state == "pinned":
            outcome[g]["reason"] = "pinned: " + res.detail
            if n == 1:
                stopped = stopped or (f"canary {g} is pinned ({res.detail}): it gave no "
                                      "evidence; unpin it or choose another --canary")
        elif res.state == "rolled_back":
            stopped = stopped or f"{g} rolled back ({res.reason})"
        elif res.state == "refused":
            stopped = stopped or f"{g} refused ({res.reason})"
        elif res.state not in ("committed", "unchanged"):
            stopped = stopped or f"{g} gave no final result ({res.state})"
    if not args.json:
        for g in wave:
            print(f"  {g}: {_line(outcome[g])}", flush=True)
    return stopped


def _mark(o: dict[str, Any]) -> str:
    """A result whose signature was not checked (no --gateway-key) or failed is marked so."""
    if o.get("forged_results"):
        return f" (+{o['forged_results']} FAILING SIGNATURE)"
    return " (unverified)" if o.get("verified") is False and o["outcome"] != "unverified" else ""


def _line(o: dict[str, Any]) -> str:
    ev = o.get("evidence") or {}
    text = str(o["outcome"]) + _mark(o) + (f" ({o['reason']})" if o.get("reason") else "")
    if ev:
        text += (f" devices {ev.get('before_up')}/{ev.get('before_total')} -> "
                 f"{ev.get('up')}/{ev.get('total')}, uplink "
                 f"{'up' if ev.get('uplink_connected') else 'DOWN'}")
        if ev.get("failing"):
            text += "; failing: " + "; ".join(ev["failing"][:3])
    elif o.get("detail"):
        text += ": " + str(o["detail"]).splitlines()[0][:200]
    return text


def register(sub: Any) -> None:
    p = sub.add_parser("fleet", help="every gateway's status; roll a bundle out in waves",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    fsub = p.add_subparsers(dest="fleet_op", metavar="OP", required=True)
    for name, helptext in (("status", "one row per gateway from the retained statuses"),
                           ("rollout", "send a signed bundle in waves, canary first")):
        f = fsub.add_parser(name, help=helptext)
        if name == "rollout":
            f.add_argument("bundle", help="a signed bundle (edge-agent config sign)")
            f.add_argument("--canary", action="append", metavar="GW",
                           help="canary gateway (repeat; default: tag wave=canary)")
            f.add_argument("--wave-size", type=argtypes.whole(1, 100_000), default=5,
                           help="gateways per wave after the canaries (default 5)")
            f.add_argument("--timeout", type=argtypes.seconds,
                           help="seconds to wait for a wave (default: probation + 90)")
            f.add_argument("--gateway-key", action="append", metavar="PUB.pem",
                           help="check the results' signatures with these keys (repeat)")
        else:
            f.add_argument("--expect-version", type=argtypes.whole(1), metavar="N",
                           help="flag gateways below N as behind (default: the highest seen)")
            f.add_argument("--backlog", type=argtypes.count, default=1000, metavar="N",
                           help="flag an outbox deeper than N batches (default 1000)")
        f.add_argument("--broker", required=True, metavar="HOST:PORT")
        f.add_argument("--prefix", default="edge", help="topic prefix (default edge)")
        add_login_options(f)
        f.add_argument("--wait", type=argtypes.seconds, default=2.0,
                       help="seconds to collect retained statuses (default 2)")
        f.add_argument("--silent-after", type=argtypes.seconds, default=300.0, metavar="S",
                       help="a status older than S seconds is silent (default 300)")
        f.add_argument("--json", action="store_true", help="machine-readable output")
        f.set_defaults(func=_status if name == "status" else _rollout)
