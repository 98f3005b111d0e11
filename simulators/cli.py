"""Entry point of ``edge-sim``: run scenarios of simulated city devices and drive their faults.

    edge-sim list
    edge-sim run SCENARIO [--seed N] [--speed X] [--write-config DIR] [--duration S] [--run-dir D]
    edge-sim fault DEVICE KIND [--seconds S] [--slow-s S] [--code N]
    edge-sim fault --endpoint NAME refuse|reset|stall|none [--seconds S]
    edge-sim reboot DEVICE
    edge-sim event DEVICE NAME [--seconds S]
    edge-sim set DEVICE KEY VALUE        (a model parameter, e.g. manhole-01 rain_mm_h 20)
    edge-sim status
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge_agent.errors import ConfigError

from .control import ControlServer, default_run_dir, send
from .faults import DeviceFault, EndpointFault
from .scenario import Scenario
from .scenario_spec import available, load_scenario


def _cmd_list(args: argparse.Namespace) -> int:
    for name in available():
        spec = load_scenario(name)
        print(f"{name:10} {spec.device_count:5d} devices  {spec.description}")
    return 0


async def _run(args: argparse.Namespace) -> int:
    scenario = Scenario.load(args.scenario, seed=args.seed, speed=args.speed)
    control = ControlServer(scenario, args.run_dir)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with scenario:
        await control.start()
        try:
            if args.write_config is not None:
                path = scenario.write_config(args.write_config, mqtt_port=args.mqtt_port)
                print(f"agent config: {path}")
            for name, ep in scenario.endpoints.items():
                units = ",".join(f"{d.unit_id}={d.name}" for d in ep.devices)
                print(f"tcp {name:12} 127.0.0.1:{ep.port}  {units}")
            for name, path_ in scenario.paths.items():
                print(f"serial {name:12} {path_}")
            for why in scenario.skipped:
                print(f"skipped: {why}")
            print(f"control: {control.path}  (edge-sim fault/reboot/status --run-dir "
                  f"{args.run_dir})", flush=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), args.duration)
        finally:
            await control.stop()
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    return asyncio.run(_run(args))


def _remote(args: argparse.Namespace, request: dict[str, Any]) -> int:
    try:
        answer = send(args.run_dir, request)
    except ConnectionError as exc:
        print(f"edge-sim: {exc}", file=sys.stderr)
        return 1
    if not answer.get("ok"):
        print(f"edge-sim: {answer.get('error', answer)}", file=sys.stderr)
        return 1
    extra = {k: v for k, v in answer.items() if k != "ok"}
    if extra:
        print(json.dumps(extra, indent=2))
    return 0


def _cmd_fault(args: argparse.Namespace) -> int:
    if args.endpoint is not None:
        if len(args.target) != 1:
            print("edge-sim: fault --endpoint NAME takes one KIND "
                  f"({', '.join(k.value for k in EndpointFault)})", file=sys.stderr)
            return 2
        request: dict[str, Any] = {"op": "fault", "endpoint": args.endpoint,
                                   "kind": args.target[0]}
    else:
        if len(args.target) != 2:
            print("edge-sim: fault DEVICE KIND "
                  f"(KIND: {', '.join(k.value for k in DeviceFault)})", file=sys.stderr)
            return 2
        request = {"op": "fault", "device": args.target[0], "kind": args.target[1]}
        if args.slow_s is not None:
            request["slow_s"] = args.slow_s
        if args.code is not None:
            request["exception_code"] = args.code
    if args.seconds is not None:
        request["seconds"] = args.seconds
    return _remote(args, request)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-sim", description="City device simulators.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every event")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def with_run_dir(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--run-dir", type=Path, default=default_run_dir(),
                       help="directory of the control socket (default: %(default)s)")
        return p

    p = sub.add_parser("list", help="list the shipped scenarios")
    p.set_defaults(func=_cmd_list)

    p = with_run_dir(sub.add_parser("run", help="run a scenario until stopped"))
    p.add_argument("scenario", help="shipped name (see `edge-sim list`) or a scenario .toml")
    p.add_argument("--seed", type=int, help="random seed (default: the scenario's)")
    p.add_argument("--speed", type=float, help="simulated seconds per real second")
    p.add_argument("--write-config", type=Path, metavar="DIR",
                   help="write agent.toml + signing.key for this run into DIR")
    p.add_argument("--mqtt-port", type=int, help="with --write-config: uplink to 127.0.0.1:PORT")
    p.add_argument("--duration", type=float, help="stop after S real seconds")
    p.set_defaults(func=_cmd_run)

    p = with_run_dir(sub.add_parser("fault", help="set a device or endpoint fault"))
    p.add_argument("target", nargs="+", metavar="DEVICE KIND | KIND")
    p.add_argument("--endpoint", metavar="NAME", help="fault a TCP endpoint instead of a device")
    p.add_argument("--seconds", type=float, help="clear the fault after S seconds")
    p.add_argument("--slow-s", type=float, help="delay of the slow fault")
    p.add_argument("--code", type=int, help="exception code of the exception fault")
    p.set_defaults(func=_cmd_fault)

    p = with_run_dir(sub.add_parser("reboot", help="power-cycle a device"))
    p.add_argument("device")
    p.set_defaults(func=lambda a: _remote(a, {"op": "reboot", "device": a.device}))

    p = with_run_dir(sub.add_parser("event", help="force an event (door, tilt, tamper, ...)"))
    p.add_argument("device")
    p.add_argument("name")
    p.add_argument("--seconds", type=float)
    p.set_defaults(func=lambda a: _remote(
        a, {"op": "event", "device": a.device, "name": a.name}
        | ({"seconds": a.seconds} if a.seconds else {})))

    p = with_run_dir(sub.add_parser("set", help="set a model parameter (rain_mm_h, leak_m3h)"))
    p.add_argument("device")
    p.add_argument("key")
    p.add_argument("value", type=float)
    p.set_defaults(func=lambda a: _remote(
        a, {"op": "set", "device": a.device, "key": a.key, "value": a.value}))

    p = with_run_dir(sub.add_parser("status", help="show the running scenario"))
    p.set_defaults(func=lambda a: _remote(a, {"op": "status"}))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        rc: int = func(args)
    except ConfigError as exc:
        print(f"edge-sim: {exc}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as exc:  # e.g. a negative --speed, a port already taken
        print(f"edge-sim: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return rc


if __name__ == "__main__":
    sys.exit(main())
