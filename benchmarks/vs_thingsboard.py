"""Side by side with ThingsBoard IoT Gateway (issue #15): edge-agent at the loads of that
comparison, delivered signed readings per CPU-second of the agent process, RSS and idle CPU.

    .venv/bin/python -m benchmarks.vs_thingsboard [--loads 500,500-point,5000,max,idle]
        [--seconds 30] [--idle-seconds 120] [--repeat 1] [--keep] [--profile DIR]
        [--agent dev|installed]

Every load runs the real daemon (``edge-agent run``, its own process) against simulated Modbus
TCP devices (their own process), signing (COSE_Sign1 Ed25519, hash-chained), committing to its
SQLite outbox with fsync and publishing QoS 1 to a private mosquitto; a verifying consumer in
this process checks every batch (signature, chain) and counts the readings it accepted. The
agent's CPU is utime + stime from /proc/PID/stat (all its threads, nothing else); no control
socket call falls inside a measuring window.

Loads (10 registers per device, as in the ThingsBoard comparison):

* ``500``: 50 devices, each its own endpoint, every 1 s, the 10 points coalesced into one read
  (500 readings/s).
* ``500-point``: the same with one request per point, as ThingsBoard's gateway polls: the points
  sit on every other register and the devices have ``max_gap = 0``, so each point is its own
  request (10 requests per device per second, in sequence).
* ``5000`` / ``5000-point``: 50 devices every 0.1 s (5,000 readings/s asked).
* ``max`` / ``max-point``: 200 devices every 50 ms (40,000 readings/s asked) / every 0.2 s with
  one request per point (10,000 asked).
* ``idle``: the 1,000-device district (``edge-sim run district``: 500 poles, a lamp controller
  and an environment module each, the shipped profiles) with every device at 60 s: CPU % of a
  core over ``--idle-seconds`` (polls included) from one interval after the first batch (every
  device polled and connected once: a device's first readings always report, and its alarm
  points close a batch each), RSS, and the time from the agent's start to the first signed
  batch at the consumer: measured on a restart (the usual case: the broker holds the
  gateway's retained chain witness), and shown for the very first start too (no witness yet:
  the uplink waits a grace period for one before it publishes).

The devices of the first six loads are ``benchmarks._mbap_server`` (a lean MBAP server whose
every answer differs from the previous one, so report by exception passes every reading:
delivered = polled); the idle load uses the lab's district simulator (pymodbus).

``--agent installed`` runs the agent as it ships (the tree ``scripts/install`` lays down with
/usr/bin/python3, benchmarks/_agent.py) instead of this venv's editable install (``dev``, the
default); the devices, broker and consumer are the same. The output names the interpreter and
the install, and checks each agent process from /proc (its executable, the site-packages its
extension modules come from).

"delivered per CPU-s" = readings verified at the consumer during the window / agent CPU seconds
in the window. ThingsBoard IoT Gateway 3.8.5 cannot be installed here (no internet); its figures
are issue #15's measurements on this machine type, printed beside ours for reference only.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import _agent, _spy
from benchmarks._agent import Agent
from benchmarks._consumer import VerifyingConsumer
from benchmarks._proc import Child, Mosquitto, cpu_seconds, memory, thread_cpu_seconds, wakeups
from benchmarks._vs_report import print_prof, print_snapshot, table
from benchmarks.e2e_tcp import _q, start_sim
from edge_agent.control.client import ControlClient, ControlUnavailable
from edge_agent.trust.keys import generate_signing_key, kid_of


@dataclass(frozen=True, slots=True)
class Load:
    name: str
    devices: int
    interval_s: float
    per_point: bool
    thingsboard: str  # issue #15's ThingsBoard figure at this load, for reference


LOADS: dict[str, Load] = {ld.name: ld for ld in (
    Load("500", 50, 1.0, False, "3.6k /CPU-s"),
    Load("500-point", 50, 1.0, True, "3.6k /CPU-s"),
    Load("5000", 50, 0.1, False, "3.3-3.4k /CPU-s"),
    Load("5000-point", 50, 0.1, True, "3.3-3.4k /CPU-s"),
    Load("max", 200, 0.05, False, "~2k/s max"),
    Load("max-point", 200, 0.2, True, "~2k/s max"),
    Load("idle", 1000, 60.0, False, "7.7 % CPU idle"),
)}
DEFAULT_LOADS = "500,500-point,5000,max,idle"
POINTS = 10


def bench_profile(d: Path, per_point: bool) -> None:
    """Ten uint16 holding registers; for one request per point they sit on every other register
    (the devices get max_gap = 0, so no read spans a gap)."""
    d.mkdir(parents=True, exist_ok=True)
    out = ['vendor = "bench"', 'model = "ten-registers"', 'class = "environment"',
           'protocol = "modbus"', 'description = "ten registers, every answer new"', ""]
    for k in range(POINTS):
        out += ["[[points]]", f'name = "r{k}"', 'table = "holding"',
                f"address = {2 * k if per_point else k}", 'type = "uint16"', "interval = 1", ""]
    (d / "bench_ten.toml").write_text("\n".join(out))


def _agent_toml(d: Path, gw: str, buses: list[tuple[str, int]],
                devices: list[tuple[str, str, str, int]], *, interval: float, max_gap: int | None,
                mqtt_port: int, key: Path, profiles: Path) -> Path:
    out = [f"gateway_id = {_q(gw)}", f"profiles_dir = {_q(profiles)}",
           f"state_dir = {_q(d / 'state')}", f"runtime_dir = {_q(d / 'run')}", ""]
    for name, port in buses:
        out += ["[[buses]]", f"name = {_q(name)}", 'kind = "tcp"', 'host = "127.0.0.1"',
                f"port = {port}", ""]
    for name, profile, bus, unit in devices:
        out += ["[[devices]]", f"name = {_q(name)}", f"profile = {_q(profile)}",
                f"bus = {_q(bus)}", f"unit_id = {unit}", f"interval = {interval}"]
        out += [] if max_gap is None else [f"max_gap = {max_gap}"]
        out.append("")
    out += ["[uplink]", 'host = "127.0.0.1"', f"port = {mqtt_port}", "",
            "[keys]", f"signing_key = {_q(key)}", ""]
    path = d / "agent.toml"
    path.write_text("\n".join(out))
    return path


class Field:
    """The simulated devices of one load: the lean MBAP server, or the district simulator."""

    def __init__(self, load: Load, d: Path, mqtt_port: int) -> None:
        self.proc: subprocess.Popen[str] | None = None
        self.sim: Child | None = None
        if load.name == "idle":
            self.sim, cfg = start_sim(d, "district", mqtt_port, None)
            self.pid = self.sim.pid
            self.buses = [(b["name"], int(b["port"])) for b in cfg["buses"]]
            self.devices = [(x["name"], x["profile"], x["bus"], int(x["unit_id"]))
                            for x in cfg["devices"]][: load.devices]
            self.profiles: Path | None = None
            return
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks._mbap_server", "--endpoints", str(load.devices),
             "--units", "1"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        info = json.loads(self.proc.stdout.readline())
        self.pid = self.proc.pid
        self.buses = [(f"ep{i:04d}", p) for i, p in enumerate(info["ports"])]
        self.devices = [(f"dev{i:04d}", "bench_ten", bus, 1) for i, (bus, _) in
                        enumerate(self.buses)]
        self.profiles = d / "profiles"
        bench_profile(self.profiles, load.per_point)

    def stop(self) -> None:
        if self.proc is not None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.sim is not None:
            self.sim.stop()


def _status(sock: Path) -> dict[str, Any] | None:
    try:
        with ControlClient(sock, timeout_s=10) as c:
            reply = c.call("status")
    except (ControlUnavailable, OSError):
        return None
    return reply.get("result") if reply.get("ok") else None


def run_load(load: Load, args: argparse.Namespace, d: Path, runner: Agent) -> dict[str, Any]:
    d.mkdir(parents=True, exist_ok=True)
    broker = Mosquitto(d / "broker")
    key_path = d / "signing.key"
    key = generate_signing_key(key_path)
    pub = key.public_key()
    gw = f"bench-{load.name}"
    fld: Field | None = None
    consumer: VerifyingConsumer | None = None
    agent: Child | None = None
    try:
        fld = Field(load, d, broker.port)
        profiles = fld.profiles or _shipped()
        config = _agent_toml(d, gw, fld.buses, fld.devices, interval=load.interval_s,
                             max_gap=0 if load.per_point else None, mqtt_port=broker.port,
                             key=key_path, profiles=profiles)
        consumer = VerifyingConsumer(broker.port, f"edge/{gw}/data", pub, kid_of(pub))
        first_start = None
        if load.name == "idle":  # a first start, then the measured run is a restart
            first_start = _first_publish(config, consumer, d, runner)
            consumer.first_at = None
        started = time.monotonic()
        argv = ["run", "--config", str(config)]
        if args.cprofile is not None:  # the event loop under cProfile during the window
            args.cprofile.mkdir(parents=True, exist_ok=True)
            prof_out = args.cprofile / f"{d.name}.prof"
            argv = runner.wrapped("_profiled", str(prof_out), *argv)
        elif args.tracemalloc is not None:  # a snapshot at the end of the window
            args.tracemalloc.mkdir(parents=True, exist_ok=True)
            snap_out = args.tracemalloc / f"{d.name}.snap"
            argv = runner.wrapped("_traced", str(snap_out), *argv)
        else:
            argv = runner.argv(*argv)
        agent = Child(argv, d / "agent.log", env=runner.env)
        sock = d / "run" / "control.sock"
        # up: every device answered once (the idle load: the first batch arrived)
        deadline = started + 60
        up = 0
        while time.monotonic() < deadline:
            if not agent.alive():
                raise RuntimeError(f"agent exited: {agent.tail()}")
            if load.name == "idle":
                if consumer.first_at is not None:
                    break
            else:
                st = _status(sock)
                up = int(st["devices"]["up"]) if st else 0
                if up >= load.devices:
                    break
            time.sleep(0.02 if load.name == "idle" else 0.2)
        checked = runner.verify(agent.pid)
        # idle: after one whole interval, when every device has been polled (and connected) once
        time.sleep(args.warmup + (load.interval_s if load.name == "idle" else 0.0))
        first_publish = (consumer.first_at - started) if consumer.first_at else None
        st0 = _status(sock) or {}
        seconds = args.idle_seconds if load.name == "idle" else args.seconds
        w0, tc0 = wakeups(agent.pid), thread_cpu_seconds(agent.pid)
        t0, cpu0, n0 = time.monotonic(), cpu_seconds(agent.pid), consumer.counts()[1]
        sim0 = cpu_seconds(fld.pid)
        if args.cprofile is not None:
            os.kill(agent.pid, signal.SIGUSR2)
        spy = None
        if args.profile is not None:
            args.profile.mkdir(parents=True, exist_ok=True)
            spy_out = args.profile / f"{d.name}.txt"
            spy = _spy.record(agent.pid, seconds, spy_out)
        rss: list[float] = []
        while time.monotonic() < t0 + seconds:
            time.sleep(min(1.0, max(0.0, t0 + seconds - time.monotonic())))
            rss.append(memory(agent.pid).rss_mib)
        t1, cpu1, n1 = time.monotonic(), cpu_seconds(agent.pid), consumer.counts()[1]
        w1, tc1 = wakeups(agent.pid), thread_cpu_seconds(agent.pid)
        if args.cprofile is not None:
            os.kill(agent.pid, signal.SIGUSR2)
            time.sleep(1.0)
            print_prof(prof_out)
        elif args.tracemalloc is not None:
            os.kill(agent.pid, signal.SIGUSR2)
            print_snapshot(snap_out)
        sim1 = cpu_seconds(fld.pid)
        if spy is not None:
            spy.wait(30)
            print(_spy.summarize(spy_out), file=sys.stderr, flush=True)
        st1 = _status(sock) or {}
        hwm = memory(agent.pid).hwm_mib
        agent.stop()
        last = consumer.counts()[1]
        while consumer.wait_readings(last + 1, 2.0):
            last = consumer.counts()[1]
        rep = consumer.report()
        ok = rep.ok and consumer.rejected == 0
        detail = (f"batches={rep.batches} dup={rep.duplicates} forged={rep.forged} "
                  f"broken={rep.broken_chain} gaps={rep.gaps_unexplained}")
    finally:
        if agent is not None:
            agent.stop()
        if consumer is not None:
            consumer.close()
        if fld is not None:
            fld.stop()
        broker.stop()
    wall, cpu = t1 - t0, cpu1 - cpu0
    agent_pid = agent.pid
    polled = int(st1.get("readings_polled", 0)) - int(st0.get("readings_polled", 0))
    return {
        "load": load.name, "devices": load.devices, "interval_s": load.interval_s,
        "asked_per_s": load.devices * POINTS / load.interval_s if load.name != "idle" else None,
        "window_s": wall, "cpu_s": cpu, "cpu_pct": 100 * cpu / wall,
        "delivered_per_s": (n1 - n0) / wall, "polled_per_s": polled / wall,
        "per_cpu_s": (n1 - n0) / cpu if cpu else float("inf"),
        "rss_mib": statistics.median(rss) if rss else float("nan"), "hwm_mib": hwm,
        "first_publish_s": first_publish,
        "first_start_s": first_start,
        "cpu_main_pct": 100 * (tc1.get(agent_pid, 0) - tc0.get(agent_pid, 0)) / wall,
        "cpu_threads_pct": 100 * sum(c - tc0.get(t, 0) for t, c in tc1.items()
                                     if t != agent_pid) / wall,
        "wake_main": (w1.get(agent_pid, 0) - w0.get(agent_pid, 0)) / wall,
        "wake_threads": sum(n - w0.get(t, 0) for t, n in w1.items() if t != agent_pid) / wall,
        "sim_cpu_pct": 100 * (sim1 - sim0) / wall,
        "verify_ok": ok, "verify_detail": detail, "thingsboard": load.thingsboard,
        "checked": checked,
    }


def _first_publish(config: Path, consumer: VerifyingConsumer, d: Path, runner: Agent
                   ) -> float | None:
    """Start the agent on an empty state dir and broker, wait for its first signed batch at the
    consumer, stop it: seconds from start to that batch. (The broker has no retained chain
    witness yet, so the uplink waits its grace period for one before publishing.)"""
    started = time.monotonic()
    agent = Child(runner.argv("run", "--config", str(config)), d / "agent-first.log",
                  env=runner.env)
    try:
        while consumer.first_at is None and time.monotonic() < started + 30 and agent.alive():
            time.sleep(0.02)
    finally:
        agent.stop()
    return None if consumer.first_at is None else consumer.first_at - started


def _shipped() -> Path:
    from edge_agent.profiles.shipped import shipped_dir

    return shipped_dir()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.vs_thingsboard", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--loads", default=DEFAULT_LOADS, help=f"of {', '.join(LOADS)}")
    ap.add_argument("--seconds", type=float, default=30.0, help="measuring window per load")
    ap.add_argument("--idle-seconds", type=float, default=120.0, help="window of the idle load")
    ap.add_argument("--warmup", type=float, default=5.0, help="after every device answered")
    ap.add_argument("--repeat", type=int, default=1, help="run every load this many times")
    ap.add_argument("--devices", type=int, help="override every load's device count (a quick "
                                                "check; the figures are then not the issue's)")
    ap.add_argument("--workdir", type=Path, help="default: a fresh dir under /var/tmp")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (logs, outboxes)")
    ap.add_argument("--profile", type=Path, metavar="DIR",
                    help="sample the agent with py-spy during each window (raw stacks in DIR, "
                         "a summary on stderr); the sampler's own CPU runs outside the agent")
    ap.add_argument("--cprofile", type=Path, metavar="DIR",
                    help="run the agent's event loop under cProfile (thread CPU clock) during "
                         "each window: pstats files in DIR, the top functions on stderr; the "
                         "CPU figures of such a run are inflated by the profiler")
    ap.add_argument("--tracemalloc", type=Path, metavar="DIR",
                    help="run the agent under tracemalloc: a snapshot at the end of each window "
                         "in DIR, its top allocation sites on stderr (RSS of such a run is "
                         "inflated by the tracing)")
    _agent.add_argument(ap, default="dev")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.loads.split(",") if n.strip()]
    unknown = [n for n in names if n not in LOADS]
    if unknown or not names:
        ap.error(f"unknown load(s) {unknown}; known: {', '.join(LOADS)}")
    runner = _agent.agent(args.agent)
    print(runner.header(), file=sys.stderr, flush=True)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="vs-tb-", dir="/var/tmp"))
    results: list[dict[str, Any]] = []
    try:
        for rep in range(args.repeat):
            for name in names:
                load = LOADS[name]
                if args.devices:
                    load = dataclasses.replace(load, devices=args.devices)
                results.append(run_load(load, args, workdir / f"{name}-{rep}", runner))
                print(f"... {name} run {rep + 1}: {results[-1]['per_cpu_s']:,.0f} per CPU-s, "
                      f"{results[-1]['cpu_pct']:.2f} % CPU", file=sys.stderr, flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    with open("/proc/loadavg") as f:
        load_avg = " ".join(f.read().split()[:3])
    print(f"vs_thingsboard: edge-agent at the loads of issue #15; load average at end {load_avg}"
          + (f"; work dir kept: {workdir}" if args.keep else ""))
    print(runner.header())
    print(table(results))
    return 0 if all(r["verify_ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
