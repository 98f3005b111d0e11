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
import shutil
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
from simulators.demo.children import ChildGroup
from simulators.demo.consumer import VerifyingConsumer
from simulators.demo.view import Screen, render
from simulators.faults import DeviceFault
from simulators.scenario import BackgroundScenario

FAULT_DEVICE = "meter-03"


class Demo:
    def __init__(self, workdir: Path, *, seed: int, broker: str) -> None:
        self.workdir = workdir
        self.children = ChildGroup()  # agent and mosquitto: one group, gone with the demo
        self.broker = DemoBroker(workdir, kind=broker, spawn=self.children.spawn)
        self.sim = BackgroundScenario.load("street", seed=seed)
        self.agent: subprocess.Popen[bytes] | None = None
        self.consumer: VerifyingConsumer | None = None
        self.events: list[str] = []
        self.t0 = time.monotonic()
        self.meter_dead = False
        self.config: Path | None = None
        self.printed = 0  # events already printed (no terminal: as they happen)

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
            self.agent = self.children.spawn(
                [sys.executable, "-m", "edge_agent.cli.main", "run", "--config", str(self.config)],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        self.event(f"broker {self.broker.kind} on 127.0.0.1:{self.broker.port}; agent pid "
                   f"{self.agent.pid}")
        # on a line of its own, so that the view (cut to the terminal's width) shows it whole
        self.event(f"logs in {self.workdir} (kept if the run fails)")

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
        self.children.stop()  # whatever is left of the group


class _Stopped(Exception):
    """SIGTERM or SIGHUP (a closed terminal) arrived: stop everything, in order."""


def _say(text: str) -> None:
    """Print, unless the terminal is gone (hang-up) or the reader left."""
    with contextlib.suppress(OSError):
        print(text, flush=True)


def run_demo(duration: float | None, seed: int, chaos: bool, broker: str = "auto",
             workdir: Path | None = None) -> int:
    tmp = tempfile.mkdtemp(prefix="edge-demo-") if workdir is None else None
    wd = Path(tmp) if tmp is not None else workdir
    assert wd is not None
    try:
        demo = Demo(wd, seed=seed, broker=broker)
    except NoBroker as exc:
        print(f"edge-agent demo: {exc}", file=sys.stderr)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        return 2
    interactive = duration is None and sys.stdin.isatty() and sys.stdout.isatty()
    old_tty = termios.tcgetattr(sys.stdin) if interactive else None
    plan = {0.2: demo.toggle_meter, 0.3: demo.toggle_broker, 0.5: demo.toggle_broker,
            0.6: demo.toggle_meter} if chaos and duration else {}

    def on_signal(signum: int, frame: object) -> None:
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)  # one stop, however many signals follow
        raise _Stopped(signal.Signals(signum).name)

    old_handlers = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM,
                                                                   signal.SIGHUP)}
    stopped = ""
    crashed = ""
    try:
        demo.start()
        if interactive:
            tty.setcbreak(sys.stdin.fileno())
        with Screen() if interactive else contextlib.nullcontext() as screen:
            _loop(demo, duration, plan, screen)
        drained = demo.drain(30.0)
        demo.event("outbox drained" if drained else "outbox NOT drained within 30 s")
    except _Stopped as exc:
        stopped = str(exc)
        demo.event(f"stopped by {stopped}: shutting down")
    except KeyboardInterrupt:
        stopped = "Ctrl-C"
        demo.event("interrupted (Ctrl-C): shutting down")
    except _AgentExited as exc:  # the event says so already
        crashed = exc.why()
    except Exception as exc:
        crashed = f"{type(exc).__name__}: {exc}"
        demo.event(f"demo failed: {crashed}")
    finally:
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)
        if old_tty is not None:
            with contextlib.suppress(termios.error, OSError):
                termios.tcsetattr(sys.stdin, termios.TCSADRAIN, old_tty)
        demo.stop()
        for sig, old in old_handlers.items():
            signal.signal(sig, old)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    assert demo.consumer is not None
    rep = demo.consumer.report()
    for e in demo.events[demo.printed:]:
        _say(e)
    ok = rep.ok and rep.batches > 0 and not crashed
    _say(f"verified: {rep.batches} batches, {rep.readings} readings, duplicates "
         f"{rep.duplicates}, gaps explained {rep.gaps_explained}, unexplained "
         f"{rep.gaps_unexplained}, forged {rep.forged}, broken links {rep.broken_chain} -> "
         f"{_verdict(rep.ok, rep.batches, crashed)}")
    if stopped:
        ok = rep.ok  # cut short on purpose: nothing to keep unless something was wrong
    if not ok:
        _say(f"logs kept in {wd} (agent.log, broker.log)")
    elif tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)
    if stopped:
        return 130 if stopped == "Ctrl-C" else 128 + int(getattr(signal, stopped))
    return 0 if ok else 1


def _loop(demo: Demo, duration: float | None, plan: dict[float, Any], screen: Any) -> None:
    """Until the duration is up, q is pressed or the agent exits."""
    last_print = 0.0
    while True:
        t = time.monotonic() - demo.t0
        if duration is not None and t >= duration:
            return
        for frac in sorted(plan):
            if duration is not None and t >= frac * duration:
                plan.pop(frac)()
        if demo.agent is not None and demo.agent.poll() is not None:
            demo.event(f"agent exited with {demo.agent.returncode}")
            raise _AgentExited(demo.agent.returncode)
        st, dv = demo.agent_status()
        if screen is not None:
            size = shutil.get_terminal_size((80, 24))
            screen.draw(render(demo, st, dv, width=size.columns, height=size.lines))
            r, _, _ = select.select([sys.stdin], [], [], 1.0)
            if r:
                ch = os.read(sys.stdin.fileno(), 1).decode(errors="ignore").lower()
                if ch == "q":
                    return
                if ch == "b":
                    demo.toggle_broker()
                if ch == "d":
                    demo.toggle_meter()
        else:
            for e in demo.events[demo.printed:]:  # events as they happen
                _say(e)
            demo.printed = len(demo.events)
            if t - last_print >= 5.0:
                last_print = t
                _say(render(demo, st, dv, compact=True))
            time.sleep(0.5)


def _verdict(verified: bool, batches: int, crashed: str) -> str:
    """The run's one verdict: a run that failed is not "ALL VERIFIED", whatever arrived."""
    if crashed:
        arrived = ("the batches that arrived verify" if verified and batches else
                   "not every batch that arrived verifies" if batches else "no batch arrived")
        return f"FAILED: {crashed}; {arrived}"
    return "ALL VERIFIED" if verified and batches else "FAILED"


class _AgentExited(Exception):
    """The agent process ended on its own: the run failed."""

    def why(self) -> str:
        code = int(self.args[0]) if self.args else 0
        if code < 0:
            try:
                return f"the agent was killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"the agent was killed by signal {-code}"
        return f"the agent exited with status {code}"
