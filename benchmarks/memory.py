"""Memory and import cost: what each module group adds to a fresh interpreter, what each command
loads, and the resident set of the running daemon polling the simulated district.

    .venv/bin/python -m benchmarks.memory [--seconds 30] [--skip-daemon]
        [--agent installed|dev|both]

The agent measured (``--agent``, see benchmarks/_agent.py) is by default the one that ships: the
tree ``scripts/install`` lays down with Debian's /usr/bin/python3 (non-editable venv, production
set, compiled modules; laid down once per source tree, ~15 s, then reused); ``dev`` is this
project venv's editable install (its interpreter and ``site`` weigh ~2 MiB more); ``both`` runs
the installed one, then the dev one. Each part's header names the interpreter and the install.

1. Module groups, imported one after the other in one fresh interpreter in the order the daemon
   needs them: wall time of the import (``time.perf_counter``) and VmRSS / RssAnon / RssFile
   after it (``/proc/self/status``). RssFile is mostly shared-library text, RssAnon the Python
   objects and the heap.
2. Commands: a fresh interpreter runs ``edge-agent COMMAND`` up to the command's own imports
   (``edge_agent.cli.main.build_parser(COMMAND)``, plus ``edge_agent.service.daemon`` for
   ``run``): modules loaded and VmRSS. (``python -X importtime -m edge_agent.cli.main ...`` gives
   the per-module breakdown.)
3. The daemon (``edge-agent run``) polling the district's 1,000 devices (the ``district``
   scenario served by ``edge-sim run district``, its own process) and forwarding to a private
   mosquitto, with the shipped profiles' intervals: VmRSS right after all devices are up, then
   sampled every second for ``--seconds`` (median, peak = VmHWM), RssAnon / RssFile at the end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import _agent
from benchmarks._agent import Agent
from benchmarks._proc import Child, Mosquitto
from benchmarks.e2e_tcp import start_sim
from edge_agent.control.client import ControlClient, ControlUnavailable

GROUPS: list[tuple[str, list[str]]] = [
    ("stdlib: logging, argparse, dataclasses, json, tomllib",
     ["logging", "argparse", "dataclasses", "json", "tomllib"]),
    ("stdlib: asyncio (with ssl)", ["asyncio", "ssl"]),
    ("stdlib: sqlite3, ctypes", ["sqlite3", "ctypes"]),
    # the daemon signs through the system OpenSSL that ssl loaded (trust/ed25519.py): it no
    # longer imports cryptography (+8.4 MiB: its own statically linked OpenSSL)
    ("Ed25519 via the system libcrypto (trust.ed25519)", ["edge_agent.trust.ed25519"]),
    ("cbor2", ["cbor2"]),
    # urllib.request deferred until used, as the daemon does (uplink/__init__.py)
    ("paho-mqtt (urllib.request deferred)", ["edge_agent.uplink", "paho.mqtt.client"]),
    ("edge_agent: profiles, config", ["edge_agent.profiles.load", "edge_agent.config.load"]),
    ("edge_agent: bus, poll", ["edge_agent.bus.tcp_endpoint", "edge_agent.poll.engine"]),
    ("edge_agent: pipeline, trust, outbox", ["edge_agent.pipeline.batcher",
                                             "edge_agent.outbox.writer"]),
    ("edge_agent: uplink, commands, control, service",
     ["edge_agent.uplink.mqtt", "edge_agent.service.daemon"]),
    # imported by service/buses.py only for a config with a serial bus (not the district's)
    ("serial buses only: pyserial, RTU line, AT module",
     ["serial", "edge_agent.bus.serial_line", "edge_agent.bus.at"]),
]
COMMANDS = ["--version", "status", "check-config", "run"]

_STATUS = """
def status():
    out = {}
    for line in open("/proc/self/status"):
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            out[key] = int(rest.split()[0]) / 1024
    return out
"""

GROUP_CHILD = _STATUS + """
import importlib, json, sys, time
groups = json.loads(sys.argv[1])
rows = [["python " + sys.version.split()[0], 0.0, len(sys.modules), status()]]
for name, mods in groups:
    t0 = time.perf_counter()
    for m in mods:
        importlib.import_module(m)
    rows.append([name, time.perf_counter() - t0, len(sys.modules), status()])
print(json.dumps(rows))
"""

COMMAND_CHILD = _STATUS + """
import json, sys, time
t0 = time.perf_counter()
from edge_agent.cli.main import build_parser
cmd = sys.argv[1]
build_parser(cmd)
if cmd == "run":
    import edge_agent.service.daemon
print(json.dumps([time.perf_counter() - t0, len(sys.modules), status()]))
"""


def child_json(code: str, *args: str, agent: Agent | None = None) -> Any:
    """``python -c CODE ARGS`` under the agent's interpreter (default: this one)."""
    argv = agent.python_argv("-c", code, *args) if agent else [sys.executable, "-c", code, *args]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=True,
                         env=agent.env if agent else None, cwd=agent.cwd if agent else None)
    return json.loads(res.stdout.strip().splitlines()[-1])


def proc_status(pid: int) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM", "Threads"):
            out[key] = int(rest.split()[0]) / (1 if key == "Threads" else 1024)
    return out


def groups_table(agent: Agent | None = None) -> str:
    rows = child_json(GROUP_CHILD, json.dumps(GROUPS), agent=agent)
    lines = [f"{'module group (cumulative, in this order)':<50} {'import ms':>9} {'modules':>7} "
             f"{'+RSS':>6} {'RSS':>6} {'anon':>6} {'file':>6}  MiB"]
    prev = rows[0][3]["VmRSS"]
    for name, secs, mods, st in rows:
        lines.append(f"{name:<50} {secs * 1000:9.1f} {mods:7d} {st['VmRSS'] - prev:6.1f} "
                     f"{st['VmRSS']:6.1f} {st['RssAnon']:6.1f} {st['RssFile']:6.1f}")
        prev = st["VmRSS"]
    return "\n".join(lines)


def commands_table(agent: Agent | None = None) -> str:
    lines = [f"{'edge-agent COMMAND: parser + its imports':<42} {'ms':>7} {'modules':>7} "
             f"{'RSS MiB':>8}"]
    for cmd in COMMANDS:
        secs, mods, st = child_json(COMMAND_CHILD, cmd, agent=agent)
        label = cmd + (" (+ edge_agent.service.daemon)" if cmd == "run" else "")
        lines.append(f"{label:<42} {secs * 1000:7.1f} {mods:7d} {st['VmRSS']:8.1f}")
    return "\n".join(lines)


def daemon_table(seconds: float, agent: Agent) -> str:
    with tempfile.TemporaryDirectory(prefix="edge-mem-", dir="/var/tmp") as tmp:
        d = Path(tmp)
        broker = Mosquitto(d / "broker")
        sim: Child | None = None
        proc: Child | None = None
        try:
            sim, cfg = start_sim(d, "district", broker.port, None)
            config = d / "sim" / "agent.toml"
            proc = Child(agent.argv("run", "--config", str(config)), d / "agent.log",
                         env=agent.env)
            sock = d / "sim" / "run" / "control.sock"
            devices = len(cfg["devices"])
            up, deadline = 0, time.monotonic() + 120
            while up < devices and time.monotonic() < deadline:
                if not proc.alive():
                    raise RuntimeError(f"agent exited: {proc.tail()}")
                try:
                    with ControlClient(sock, timeout_s=5) as c:
                        up = int(c.call("status")["result"]["devices"]["up"])
                except (ControlUnavailable, OSError, KeyError):
                    pass
                time.sleep(0.25)
            checked = agent.verify(proc.pid)
            first = proc_status(proc.pid)
            samples = []
            for _ in range(int(seconds)):
                time.sleep(1.0)
                samples.append(proc_status(proc.pid)["VmRSS"])
            last = proc_status(proc.pid)
        finally:
            if proc is not None:
                proc.stop()
            if sim is not None:
                sim.stop()
            broker.stop()
    return "\n".join([
        f"daemon: {up}/{devices} district devices up, {seconds:.0f} s sampled, "
        f"{int(last['Threads'])} threads; {checked}",
        f"  RSS when all devices were up        {first['VmRSS']:6.1f} MiB",
        f"  RSS median / peak (VmHWM)           {statistics.median(samples):6.1f} / "
        f"{last['VmHWM']:.1f} MiB",
        f"  at the end: anon / file             {last['RssAnon']:6.1f} / {last['RssFile']:.1f} MiB",
    ])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.memory", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=30.0, help="daemon sampling window")
    ap.add_argument("--skip-daemon", action="store_true", help="imports and commands only")
    ap.add_argument("--agent", choices=(*_agent.KINDS, "both"), default="installed",
                    help="which edge-agent to measure (default installed): 'installed' lays "
                         "down (or reuses) the tree of scripts/install with /usr/bin/python3, "
                         "as it ships; 'dev' runs this venv's editable install; 'both': "
                         "installed, then dev")
    args = ap.parse_args(argv)
    for kind in ("installed", "dev") if args.agent == "both" else (args.agent,):
        agent = _agent.agent(kind)
        print(agent.header(), end="\n\n", flush=True)
        print(groups_table(agent), end="\n\n", flush=True)
        print(commands_table(agent), end="\n\n", flush=True)
        if not args.skip_daemon:
            print(daemon_table(args.seconds, agent), end="\n\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
