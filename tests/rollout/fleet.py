"""A simulated fleet for the rollout tests: several gateways, each the real `edge-agent run` in its
own process, on one mosquitto, polling one simulated street over Modbus TCP -- each kept running
the way systemd keeps the unit running (Restart=on-failure, RestartForceExitStatus=75)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.control.client import ControlClient
from edge_agent.trust.ed25519 import PrivateKey
from edge_agent.trust.keys import generate_signing_key, load_signing_key, public_pem
from simulators.scenario import Scenario
from tests.support_broker import Mosquitto

RESTART_SEC = 0.5  # the unit's RestartSec=5s, shortened for the tests
EXIT_RESTART = 75


class Supervised:
    """One gateway process, restarted as systemd restarts the unit: after any exit but 0 (75,
    the daemon's controlled restart, included), and after a kill, until ``stop()``."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.argv, self.env, self.log = argv, env, log
        self.exits: list[int] = []
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self.proc = self._spawn()
        self._thread = threading.Thread(target=self._watch, name="supervisor", daemon=True)
        self._thread.start()

    def _spawn(self) -> subprocess.Popen[bytes]:
        with open(self.log, "ab") as out:
            return subprocess.Popen(self.argv, stdout=out, stderr=out, env=self.env)

    def _watch(self) -> None:
        while True:
            with self._lock:
                proc = self.proc
            code = proc.wait()
            if self._stopping.is_set():
                return
            self.exits.append(code)
            if code == 0:
                return
            if self._stopping.wait(RESTART_SEC):
                return
            with self._lock:
                if self._stopping.is_set():
                    return
                self.proc = self._spawn()

    def kill9(self) -> None:
        with self._lock:
            self.proc.send_signal(signal.SIGKILL)

    def kill9_down(self) -> None:
        """kill -9 and keep it down (the cabinet lost power): the broker sends its last will."""
        self._stopping.set()
        with self._lock:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self._thread.join(5)

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            proc = self.proc
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._thread.join(5)


@dataclass
class FleetGateway:
    id: str
    dir: Path
    config: Path
    key: PrivateKey
    proc: Supervised
    notify: socket.socket
    notes: list[str] = field(default_factory=list)

    @property
    def socket_path(self) -> Path:
        return self.dir / "run" / "control.sock"

    def call(self, op: str, **args: Any) -> Any:
        with ControlClient(self.socket_path, timeout_s=30) as c:
            return c.result(op, **args)

    def wait_ready(self, timeout: float = 40.0) -> bool:
        """The next READY=1 (after a start or a restart)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.notify.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                note = self.notify.recv(4096).decode()
            except TimeoutError:
                break
            self.notes.append(note)
            if "READY=1" in note:
                return True
        return False

    def start_again(self) -> None:
        """Power back: a new supervised process (after ``proc.stop()`` or ``kill9_down()``)."""
        old = self.proc
        self.proc = Supervised(old.argv, old.env, old.log)

    def log_text(self) -> str:
        return (self.dir / "agent.log").read_text(errors="replace")

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, timeout=timeout, env={"EDGE_AGENT_SOCKET": str(self.socket_path)})


def run_cli(*args: str, timeout: float = 60, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_agent.cli.main", *args],
                          capture_output=True, text=True, timeout=timeout, check=False,
                          env=dict(os.environ, **(env or {})))


@dataclass
class Fleet:
    dir: Path
    broker: Mosquitto
    sim: Scenario
    gateways: dict[str, FleetGateway]
    config_op: Path  # the configuration operator's key file
    command_op: Path  # a command operator's key file
    managed: str  # the managed part every gateway starts with (as in its local agent.toml)

    @property
    def broker_addr(self) -> str:
        return f"127.0.0.1:{self.broker.port}"

    def sign(self, version: int, managed: str, *args: str, key: Path | None = None,
             name: str | None = None) -> Path:
        src = self.dir / f"managed-{version}.toml"
        src.write_text(managed)
        out = self.dir / (name or f"bundle-{version}.cose")
        done = run_cli("config", "sign", str(src), "--key", str(key or self.config_op),
                       "--version", str(version), "--out", str(out), *args)
        assert done.returncode == 0, done.stderr
        return out

    def fleet(self, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return run_cli("fleet", *args, "--broker", self.broker_addr, timeout=timeout)

    def status(self) -> dict[str, dict[str, Any]]:
        done = self.fleet("status", "--json", "--wait", "1.5")
        assert done.returncode in (0, 1), done.stderr
        return {g["gateway"]: g for g in json.loads(done.stdout)["gateways"]}


LOCAL_TOP = re.compile(r"(?s)^(.*?)(\[\[buses\]\].*?)(\[uplink\].*?)(\[keys\].*)$")


def start_fleet(base: Path, sim: Scenario, broker: Mosquitto, ids: list[str],
                tags: dict[str, dict[str, str]]) -> Fleet:
    base.mkdir(parents=True, exist_ok=True)
    config_op = base / "config-operator.key"
    command_op = base / "command-operator.key"
    ops: dict[str, Ed25519PrivateKey] = {
        "config": generate_signing_key(config_op), "command": generate_signing_key(command_op)}
    gateways: dict[str, FleetGateway] = {}
    managed = ""
    try:
        for gw in ids:
            d = base / gw
            generated = sim.write_config(d, mqtt_port=broker.port, gateway_id=gw).read_text()
            m = LOCAL_TOP.match(generated)
            assert m is not None, generated
            head, devices, uplink, keys = m.groups()
            managed = (devices + uplink.replace("[uplink]\n", "[uplink]\nstatus_interval = 1\n")
                       + "[commands]\nallow_unsynced_clock = true\n\n")
            for role, key in ops.items():
                (d / f"{role}-operators").mkdir()
                (d / f"{role}-operators" / "op.pub").write_bytes(public_pem(key))
            tag_text = ", ".join(f'{k} = "{v}"' for k, v in tags[gw].items())
            keys = keys.replace("[keys]\n", f'[keys]\ncommand_keys = "{d}/command-operators"\n'
                                f'config_keys = "{d}/config-operators"\n')
            config = d / "agent.toml"
            config.write_text(head + managed + keys + f"\n[rollout]\ntags = {{ {tag_text} }}\n")
            notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            notify.bind(str(d / "notify.sock"))
            env = dict(os.environ, NOTIFY_SOCKET=str(d / "notify.sock"), WATCHDOG_USEC="2000000")
            proc = Supervised([sys.executable, "-m", "edge_agent.cli.main", "run", "--config",
                               str(config)], env, d / "agent.log")
            gateways[gw] = FleetGateway(gw, d, config, load_signing_key(d / "signing.key"), proc,
                                        notify)
        for g in gateways.values():
            assert g.wait_ready(), g.log_text()[-3000:]
    except BaseException:
        stop_fleet(gateways)
        raise
    return Fleet(base, broker, sim, gateways, config_op, command_op, managed)


def stop_fleet(gateways: dict[str, FleetGateway]) -> None:
    for g in gateways.values():
        g.proc.stop()
        with contextlib.suppress(OSError):
            g.notify.close()
