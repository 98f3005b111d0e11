"""End-to-end benchmark: the real daemon polling the simulated district over Modbus TCP, signing,
fsync-ing into its outbox and forwarding to a real mosquitto, checked by a verifying consumer.

    .venv/bin/python -m benchmarks.e2e_tcp [--seconds 60] [--warmup 8] [--devices 1000]
        [--interval 1.0] [--point-interval 3.0] [--modes block,point] [--pin] [--keep]

Processes: mosquitto (own conf, free loopback port), the district simulator (``edge-sim run``),
the agent (``edge-agent run``), and this process: the consumer (paho, QoS 1) feeding every batch
to ``ChainVerifier`` with the gateway's public key. Each is its own process, so the agent's CPU
(read from the kernel) is its own. ``--pin`` puts the agent on the first core and the simulator on
the second; on a shared, loaded host that makes the agent wait for its one core (more timeouts),
so the default leaves placement to the scheduler.

Modes (one fresh agent and outbox each; the simulator and the broker are shared). The profiles
are copied without deadbands and with heartbeat = interval (alarm points: on change only, as an
alarm report closes the batch), so nearly every poll of a moving value is reported; values that did
not change and whose heartbeat is not quite due are still filtered (report by exception), so
"emitted" < "polled" and both are shown:

* ``block``: every device every ``--interval`` s, the planner's block reads (lamp: 4 requests for
  11 points, environment: 1 for 5).
* ``point``: one request per point, as ThingsBoard's gateway does it: ``max_gap = 0`` and each
  point of a profile its own interval (``--point-interval`` + k ms), so no two points share a
  request. Default 3 s: at 1 s the 8,000 requests/s would exceed what the simulator's one core
  serves (benchmarks.sim_district), and the benchmark would measure the simulator.

Measured over the window after the warm-up: agent CPU (utime+stime from /proc/PID/stat, children
excluded), readings committed to the outbox (signed, fsync'd; control socket ``buffer``), readings
verified at the consumer, resident set (VmRSS sampled each second, VmHWM), and the poller's own
count of readings polled (before report by exception; status ``readings_polled``). The poller
also logs its totals at exit (``poller_stopped``): "whole run" divides those by the agent's CPU
from start to exit (start-up and shutdown included).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks._agent import dev_bin as _bin
from benchmarks._consumer import VerifyingConsumer
from benchmarks._proc import Child, Mosquitto, cpu_seconds, memory
from edge_agent.control.client import ControlClient, ControlUnavailable
from edge_agent.profiles.shipped import shipped_dir
from edge_agent.trust.keys import kid_of, load_signing_key
from simulators.scenario_spec import SCENARIO_DIR

PROFILES = shipped_dir()
DISTRICT_POLES = 500
MODES = ("block", "point")
STOPPED_RE = re.compile(r"poller_stopped readings=(\d+) emitted=(\d+)")
DROP_KEYS = ("deadband", "deadband_percent", "heartbeat", "interval")


def write_profiles(dst: Path, names: set[str], mode: str, interval: float) -> None:
    """Copy the profiles ``names`` into ``dst`` with reporting rewritten for ``mode``: no
    deadbands; heartbeat = interval, except on alarm points, which close the batch whenever they
    report and so report on change only (the shipped profiles give them 10-minute heartbeats)."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in sorted(names):
        head, *points = (PROFILES / f"{name}.toml").read_text().split("[[points]]")
        out = [head.rstrip("\n")]
        for k, block in enumerate(points):
            lines = [ln for ln in block.splitlines()
                     if not ("=" in ln and ln.split("=", 1)[0].strip() in DROP_KEYS)]
            # block: one interval, one group; point: a distinct interval per point, so every
            # point is its own group and its own request
            iv = interval if mode == "block" else round(interval + 0.001 * k, 3)
            alarm = any(re.match(r"\s*alarm\s*=\s*true", ln) for ln in lines)
            out += ["[[points]]" + lines[0], f"interval = {iv}",
                    *([] if alarm else [f"heartbeat = {iv}"]), *lines[1:]]
        (dst / f"{name}.toml").write_text("\n".join(out) + "\n")


def scenario_for(workdir: Path, poles: int) -> str:
    """The shipped district, or a copy of it with fewer poles."""
    if poles >= DISTRICT_POLES:
        return "district"
    src = SCENARIO_DIR / "district.toml"
    text = re.sub(r"(?m)^count = \d+$", f"count = {poles}", src.read_text())
    if not re.search(r"(?m)^profiles_dir\s*=", text):  # relative to the copy's new home
        text = f"profiles_dir = {_q(PROFILES)}\n" + text
    path = workdir / "district_subset.toml"
    path.write_text(text)
    return str(path)


def start_sim(workdir: Path, scenario: str, mqtt_port: int, cores: set[int] | None
              ) -> tuple[Child, dict[str, Any]]:
    simdir = workdir / "sim"
    child = Child([*_bin("edge-sim"), "run", scenario, "--write-config", str(simdir),
                   "--mqtt-port", str(mqtt_port), "--run-dir", str(workdir / "simrun")],
                  workdir / "sim.log", cores=cores)
    deadline = time.monotonic() + 120
    while "control:" not in child.tail(100_000):
        if not child.alive() or time.monotonic() > deadline:
            child.stop()
            raise RuntimeError(f"simulator did not start: {child.tail()}")
        time.sleep(0.1)
    with open(simdir / "agent.toml", "rb") as f:
        return child, tomllib.load(f)


def _q(v: object) -> str:
    return json.dumps(str(v))


def write_agent_config(d: Path, sim: dict[str, Any], *, mode: str, devices: int,
                       interval: float, mqtt_port: int, batch: tuple[int, int]) -> Path:
    devs = sim["devices"][:devices]
    write_profiles(d / "profiles", {x["profile"] for x in devs}, mode, interval)
    used = {x["bus"] for x in devs}
    out = [f"gateway_id = {_q('bench-' + mode)}", f"profiles_dir = {_q(d / 'profiles')}",
           f"state_dir = {_q(d / 'state')}", f"runtime_dir = {_q(d / 'run')}", ""]
    for b in sim["buses"]:
        if b["name"] in used:
            out += ["[[buses]]", f"name = {_q(b['name'])}", 'kind = "tcp"',
                    f"host = {_q(b['host'])}", f"port = {b['port']}", ""]
    for x in devs:
        out += ["[[devices]]", f"name = {_q(x['name'])}", f"profile = {_q(x['profile'])}",
                f"bus = {_q(x['bus'])}", f"unit_id = {x['unit_id']}"]
        out += [] if mode == "block" else ["max_gap = 0"]
        out.append("")
    out += ["[uplink]", 'host = "127.0.0.1"', f"port = {mqtt_port}", "",
            "[batch]", f"max_readings = {batch[0]}", f"max_ms = {batch[1]}", "",
            "[keys]", f"signing_key = {_q(sim['keys']['signing_key'])}", ""]
    path = d / "agent.toml"
    path.write_text("\n".join(out))
    return path


@dataclass(frozen=True, slots=True)
class Snap:
    t: float
    cpu_s: float
    sim_cpu_s: float
    broker_cpu_s: float
    committed: int  # readings appended to the outbox since open
    bytes_written: int  # kernel write_bytes of the outbox (-1 unknown)
    batches: int
    acked: int
    failures: int
    missed: int
    consumed: int  # readings verified at the consumer
    polled: int | None  # the poller's count, when the status exposes it


class Run:
    """One agent process for one mode."""

    def __init__(self, d: Path, config: Path, cores: set[int] | None, sim: Child,
                 broker: Mosquitto, consumer: VerifyingConsumer) -> None:
        self.ctl = d / "run" / "control.sock"
        self.sim, self.broker, self.consumer = sim, broker, consumer
        self.agent = Child([*_bin("edge-agent"), "run", "--config", str(config),
                            "--log-level", "info"], d / "agent.log", cores=cores)

    def call(self, op: str) -> Any:
        with ControlClient(self.ctl, timeout_s=10) as c:
            reply = c.call(op)
        if not reply.get("ok"):
            raise RuntimeError(f"control {op}: {reply}")
        return reply["result"]

    def wait_up(self, devices: int, timeout_s: float) -> int:
        deadline = time.monotonic() + timeout_s
        up = 0
        while time.monotonic() < deadline:
            if not self.agent.alive():
                raise RuntimeError(f"agent exited: {self.agent.tail()}")
            try:
                up = int(self.call("status")["devices"]["up"])
            except (ControlUnavailable, OSError):
                up = 0
            if up >= devices:
                break
            time.sleep(0.25)
        return up

    def snap(self) -> Snap:
        t, cpu = time.monotonic(), cpu_seconds(self.agent.pid)
        sim_cpu, broker_cpu = cpu_seconds(self.sim.pid), cpu_seconds(self.broker.child.pid)
        consumed = self.consumer.counts()[1]
        st, buf, devs = self.call("status"), self.call("buffer"), self.call("devices")
        return Snap(t, cpu, sim_cpu, broker_cpu, int(buf["readings_appended"]),
                    int(buf["bytes_written"]), int(st["batches_committed"]),
                    int(st["uplink"].get("acked", 0)), sum(int(x["failures"]) for x in devs),
                    sum(int(x["missed_deadlines"]) for x in devs), consumed,
                    _polled(st))


def _polled(status: dict[str, Any]) -> int | None:
    """The poller's count of readings polled (before report by exception), if the status has it."""
    made = status.get("readings_polled")
    return made if isinstance(made, int) else None


def run_mode(mode: str, args: argparse.Namespace, workdir: Path, sim: Child,
             sim_cfg: dict[str, Any], broker: Mosquitto, agent_cores: set[int] | None
             ) -> dict[str, Any]:
    d = workdir / mode
    interval = args.interval if mode == "block" else args.point_interval
    config = write_agent_config(d, sim_cfg, mode=mode, devices=args.devices, interval=interval,
                                mqtt_port=broker.port, batch=(args.batch_readings, args.batch_ms))
    n_dev = min(args.devices, len(sim_cfg["devices"]))
    key = load_signing_key(Path(sim_cfg["keys"]["signing_key"]))
    pub = key.public_key()
    consumer = VerifyingConsumer(broker.port, f"edge/bench-{mode}/data", pub, kid_of(pub))
    try:
        run = Run(d, config, agent_cores, sim, broker, consumer)
        try:
            up = run.wait_up(n_dev, 30)
            ready_cpu = cpu_seconds(run.agent.pid)
            time.sleep(args.warmup)
            s0 = run.snap()
            rss: list[float] = []
            while time.monotonic() < s0.t + args.seconds:
                time.sleep(min(1.0, max(0.0, s0.t + args.seconds - time.monotonic())))
                rss.append(memory(run.agent.pid).rss_mib)
            s1 = run.snap()
            hwm = memory(run.agent.pid).hwm_mib
        finally:
            final_cpu = run.agent.stop()
        log = run.agent.tail(200_000)
        stopped = STOPPED_RE.findall(log)
        polled, emitted = (int(stopped[-1][0]), int(stopped[-1][1])) if stopped else (None, None)
        last = consumer.counts()[1]  # wait for the last batches (flushed at stop) to arrive
        while consumer.wait_readings(last + 1, 2.0):
            last = consumer.counts()[1]
        rep = consumer.report()
    finally:
        consumer.close()
    wall, cpu = s1.t - s0.t, s1.cpu_s - s0.cpu_s
    committed = s1.committed - s0.committed
    win_polled = None if s0.polled is None or s1.polled is None else s1.polled - s0.polled
    disk = s1.bytes_written - s0.bytes_written
    return {
        "mode": mode, "devices": n_dev, "devices_up": up, "interval_s": interval,
        "window_s": wall, "agent_cpu_s": cpu, "agent_cpu_pct": 100 * cpu / wall,
        "committed_per_s": committed / wall, "verified_per_s": (s1.consumed - s0.consumed) / wall,
        "per_cpu_s": committed / cpu if cpu else 0.0,
        "batches": s1.batches - s0.batches, "acked": s1.acked - s0.acked,
        "readings_per_batch": committed / max(1, s1.batches - s0.batches),
        "disk_b_per_reading": disk / committed if committed and s0.bytes_written >= 0 else None,
        "failures": s1.failures - s0.failures, "missed": s1.missed - s0.missed,
        "rss_steady_mib": statistics.median(rss) if rss else float("nan"), "rss_peak_mib": hwm,
        "sim_cpu_pct": 100 * (s1.sim_cpu_s - s0.sim_cpu_s) / wall,
        "broker_cpu_pct": 100 * (s1.broker_cpu_s - s0.broker_cpu_s) / wall,
        "polled_per_s": None if win_polled is None else win_polled / wall,
        "polled_per_cpu_s": None if win_polled is None or not cpu else win_polled / cpu,
        "run_polled": polled, "run_emitted": emitted, "startup_cpu_s": ready_cpu,
        "run_cpu_s": final_cpu,
        "run_polled_per_cpu_s": polled / final_cpu if final_cpu and polled else None,
        "verified_total": rep.readings, "verify_ok": rep.ok and consumer.rejected == 0,
        "verify_detail": (f"batches={rep.batches} dup={rep.duplicates} forged={rep.forged} "
                          f"broken={rep.broken_chain} gaps={rep.gaps_unexplained}"),
    }


ROWS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("devices (up at start)", ("devices", "devices_up"), "{} ({})"),
    ("poll interval s", ("interval_s",), "{}"),
    ("window s", ("window_s",), "{:.1f}"),
    ("agent CPU s in window", ("agent_cpu_s",), "{:.2f}"),
    ("agent CPU % of one core", ("agent_cpu_pct",), "{:.1f}"),
    ("readings committed /s (signed, fsync'd)", ("committed_per_s",), "{:,.0f}"),
    ("readings verified at consumer /s", ("verified_per_s",), "{:,.0f}"),
    ("READINGS PER AGENT CPU-SECOND", ("per_cpu_s",), "{:,.0f}"),
    ("readings polled /s (poller count)", ("polled_per_s",), "{:,.0f}"),
    ("POLLED PER AGENT CPU-SECOND", ("polled_per_cpu_s",), "{:,.0f}"),
    ("batches committed / PUBACKed", ("batches", "acked"), "{} / {}"),
    ("readings per batch", ("readings_per_batch",), "{:.1f}"),
    ("outbox bytes written per reading", ("disk_b_per_reading",), "{:.0f}"),
    ("poll failures / missed deadlines", ("failures", "missed"), "{} / {}"),
    ("RSS steady MiB (median VmRSS)", ("rss_steady_mib",), "{:.1f}"),
    ("RSS peak MiB (VmHWM)", ("rss_peak_mib",), "{:.1f}"),
    ("simulator / broker CPU %", ("sim_cpu_pct", "broker_cpu_pct"), "{:.0f} / {:.0f}"),
    ("whole run: polled / emitted (poller)", ("run_polled", "run_emitted"), "{:,} / {:,}"),
    ("whole run: agent CPU s (to devices up)", ("run_cpu_s", "startup_cpu_s"), "{:.1f} ({:.1f})"),
    ("whole run: POLLED PER CPU-SECOND", ("run_polled_per_cpu_s",), "{:,.0f}"),
    ("verified readings total", ("verified_total",), "{:,}"),
    ("chain + signatures ok", ("verify_ok",), "{}"),
)


def table(results: list[dict[str, Any]]) -> str:
    """Metrics down, modes across."""
    width = max(len(label) for label, _, _ in ROWS)
    header = f"{'metric':<{width}}" + "".join(f"  {r['mode']:>18}" for r in results)
    lines = [header, "-" * len(header)]
    for label, keys, fmt in ROWS:
        cells = []
        for r in results:
            vals = [r[k] for k in keys]
            cells.append("n/a" if any(v is None for v in vals) else fmt.format(*vals))
        lines.append(f"{label:<{width}}" + "".join(f"  {c:>18}" for c in cells))
    lines += [f"verify[{r['mode']}]: {r['verify_detail']}" for r in results]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.e2e_tcp", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0, help="measuring window per mode")
    ap.add_argument("--warmup", type=float, default=8.0, help="after all devices are up")
    ap.add_argument("--devices", type=int, default=1000, help="first N district devices")
    ap.add_argument("--interval", type=float, default=1.0, help="block mode poll interval, s")
    ap.add_argument("--point-interval", type=float, default=3.0,
                    help="point mode poll interval, s")
    ap.add_argument("--modes", default=",".join(MODES), help="block, point or both")
    ap.add_argument("--batch-readings", type=int, default=200)
    ap.add_argument("--batch-ms", type=int, default=1000)
    ap.add_argument("--pin", action="store_true",
                    help="pin the agent to the first core, the simulator to the second")
    ap.add_argument("--workdir", type=Path, help="default: a fresh dir under /var/tmp")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (logs, outboxes)")
    args = ap.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or any(m not in MODES for m in modes) or args.devices < 1:
        ap.error(f"--modes takes {', '.join(MODES)}; --devices must be >= 1")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="e2e-", dir="/var/tmp"))
    workdir.mkdir(parents=True, exist_ok=True)
    cores = sorted(os.sched_getaffinity(0))
    pinned = args.pin and len(cores) >= 2
    agent_cores, sim_cores = ({cores[0]}, {cores[1]}) if pinned else (None, None)
    poles = min(DISTRICT_POLES, (args.devices + 1) // 2)
    results: list[dict[str, Any]] = []
    broker = Mosquitto(workdir / "broker")
    try:
        sim, sim_cfg = start_sim(workdir, scenario_for(workdir, poles), broker.port, sim_cores)
        try:
            for mode in modes:
                results.append(run_mode(mode, args, workdir, sim, sim_cfg, broker, agent_cores))
        finally:
            sim.stop()
    finally:
        broker.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"e2e_tcp: {args.devices} devices of the district ({poles} poles), batch "
          f"{args.batch_readings} readings / {args.batch_ms} ms, "
          f"agent pinned to {sorted(agent_cores) if agent_cores else 'any'}, simulator to "
          f"{sorted(sim_cores) if sim_cores else 'any'}"
          + (f", work dir kept: {workdir}" if args.keep else ""))
    print(table(results))
    return 0 if all(r["verify_ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
