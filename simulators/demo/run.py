"""`edge-agent demo`: the street scenario, a broker, the agent and a verifying consumer, live.

Keys (on a terminal): b = kill / restart the broker (watch the outbox fill and drain),
d = kill / revive a water meter (watch it quarantined, its neighbours unaffected), q = quit.
``--duration S`` runs unattended (with ``--chaos``: broker outage and a dead meter on a timer);
the exit status is 0 only when every batch verified and nothing is unexplained.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import tempfile
import termios
import time
import tty
from pathlib import Path
from typing import Any

from edge_agent.control.client import ControlClient, ControlUnavailable
from edge_agent.errors import UplinkError
from edge_agent.trust.keys import kid_of, load_signing_key
from simulators.demo.brokers import DemoBroker, NoBroker
from simulators.demo.consumer import VerifyingConsumer
from simulators.demo.view import render
from simulators.faults import DeviceFault
from simulators.scenario import BackgroundScenario

FAULT_DEVICE = "meter-03"


class Demo:
    def __init__(self, workdir: Path, *, seed: int, broker: str) -> None:
        self.workdir = workdir
        self.broker = DemoBroker(workdir, kind=broker)
        self.sim = BackgroundScenario.load("street", seed=seed)
        self.agent: subprocess.Popen[bytes] | None = None
        self.consumer: VerifyingConsumer | None = None
        self.events: list[str] = []
        self.t0 = time.monotonic()
        self.meter_dead = False
        self.config: Path | None = None

    def start(self) -> None:
        self.broker.start()
        self.sim.start()
        cfg_dir = self.workdir / "gateway"
        self.config = self.sim.scenario.write_config(cfg_dir, mqtt_port=self.broker.port,
                                                     gateway_id="gw-demo")
        key = load_signing_key(cfg_dir / "signing.key")
        self.consumer = VerifyingConsumer(self.broker.consumer_port, {kid_of(key.public_key()):
                                                             key.public_key()})
        self.consumer.start()
        if not self.consumer.subscribed.wait(10):
            raise UplinkError("the verifying consumer could not subscribe")
        with open(self.workdir / "agent.log", "wb") as log:  # the child keeps its own descriptor
            self.agent = subprocess.Popen(
                [sys.executable, "-m", "edge_agent.cli.main", "run", "--config", str(self.config)],
                stdout=log, stderr=log)
        self.event(f"broker {self.broker.kind} on 127.0.0.1:{self.broker.port}; agent pid "
                   f"{self.agent.pid}; logs in {self.workdir / 'agent.log'}")

    def event(self, text: str) -> None:
        self.events.append(f"{time.monotonic() - self.t0:6.1f}s  {text}")

    def toggle_broker(self) -> None:
        if self.broker.running:
            self.broker.kill()
            self.event(f"{self.broker.outage}: the outbox keeps every batch")
        else:
            self.broker.start()
            back = "broker back" if self.broker.kind == "mosquitto" else "link back"
            self.event(f"{back}: backlog drains in seq order")

    def toggle_meter(self) -> None:
        self.meter_dead = not self.meter_dead
        self.sim.scenario.fault(FAULT_DEVICE, DeviceFault.DEAD if self.meter_dead
                                else DeviceFault.NONE)
        self.event(f"{FAULT_DEVICE} {'dead' if self.meter_dead else 'revived'}")

    def agent_status(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        assert self.config is not None
        sock = self.config.parent / "run" / "control.sock"
        try:
            with ControlClient(sock, timeout_s=2.0) as c:
                st, dv = c.call("status"), c.call("devices")
            return st.get("result", {}), dv.get("result", [])
        except (ControlUnavailable, OSError, ValueError):
            return {}, []

    def drain(self, timeout_s: float) -> bool:
        if not self.broker.running:
            self.broker.start()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            st, _ = self.agent_status()
            if st and st.get("outbox", {}).get("depth", 1) == 0:
                return True
            time.sleep(0.25)
        return False

    def stop(self) -> None:
        if self.agent is not None and self.agent.poll() is None:
            self.agent.send_signal(signal.SIGTERM)
            try:
                self.agent.wait(20)
            except subprocess.TimeoutExpired:
                self.agent.kill()
                self.agent.wait()
        time.sleep(0.5)  # last PUBACKed batches reach the consumer
        if self.consumer is not None:
            self.consumer.stop()
        self.sim.stop()
        self.broker.stop()


def run_demo(duration: float | None, seed: int, chaos: bool, broker: str = "auto",
             workdir: Path | None = None) -> int:
    tmp = tempfile.TemporaryDirectory(prefix="edge-demo-") if workdir is None else None
    wd = Path(tmp.name) if tmp is not None else workdir
    assert wd is not None
    try:
        demo = Demo(wd, seed=seed, broker=broker)
    except NoBroker as exc:
        print(f"edge-agent demo: {exc}", file=sys.stderr)
        if tmp is not None:
            tmp.cleanup()
        return 2
    interactive = duration is None and sys.stdin.isatty() and sys.stdout.isatty()
    old_tty = termios.tcgetattr(sys.stdin) if interactive else None
    plan = {0.2: demo.toggle_meter, 0.3: demo.toggle_broker, 0.5: demo.toggle_broker,
            0.6: demo.toggle_meter} if chaos and duration else {}
    last_print = 0.0
    try:
        demo.start()
        if interactive:
            tty.setcbreak(sys.stdin.fileno())
        while True:
            t = time.monotonic() - demo.t0
            if duration is not None and t >= duration:
                break
            for frac in sorted(plan):
                if duration is not None and t >= frac * duration:
                    plan.pop(frac)()
            if demo.agent is not None and demo.agent.poll() is not None:
                demo.event(f"agent exited with {demo.agent.returncode}")
                break
            st, dv = demo.agent_status()
            assert demo.consumer is not None
            if interactive:
                sys.stdout.write("\x1b[H\x1b[2J" + render(demo, st, dv) + "\n")
                sys.stdout.flush()
                r, _, _ = select.select([sys.stdin], [], [], 1.0)
                if r:
                    ch = os.read(sys.stdin.fileno(), 1).decode(errors="ignore").lower()
                    if ch == "q":
                        break
                    if ch == "b":
                        demo.toggle_broker()
                    if ch == "d":
                        demo.toggle_meter()
            else:
                if t - last_print >= 5.0:
                    last_print = t
                    print(render(demo, st, dv, compact=True), flush=True)
                time.sleep(0.5)
        drained = demo.drain(30.0)
        demo.event("outbox drained" if drained else "outbox NOT drained within 30 s")
    finally:
        if old_tty is not None:
            termios.tcsetattr(sys.stdin, termios.TCSADRAIN, old_tty)
        demo.stop()
    assert demo.consumer is not None
    rep = demo.consumer.report()
    for e in demo.events:
        print(e)
    print(f"verified: {rep.batches} batches, {rep.readings} readings, duplicates {rep.duplicates},"
          f" gaps explained {rep.gaps_explained}, unexplained {rep.gaps_unexplained}, "
          f"forged {rep.forged}, broken links {rep.broken_chain} -> "
          f"{'ALL VERIFIED' if rep.ok and rep.batches else 'FAILED'}")
    if tmp is not None:
        with contextlib.suppress(OSError):
            tmp.cleanup()
    return 0 if rep.ok and rep.batches > 0 else 1
