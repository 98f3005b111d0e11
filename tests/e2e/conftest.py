"""A running gateway for end-to-end tests: real mosquitto, simulators on TCP and ptys, the agent as
its own process under a systemd-like notify socket, an operator key on its allowlist."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.trust.ed25519 import PrivateKey
from edge_agent.trust.keys import generate_signing_key, load_signing_key, public_pem
from simulators.scenario import BackgroundScenario, Scenario
from tests.support_broker import Mosquitto
from tests.support_disk import small_fs
from tests.uplink.proxy import Proxy

HERE = Path(__file__).resolve().parent
GW = "gw-e2e"


@dataclass
class Gateway:
    dir: Path
    config: Path
    broker: Mosquitto
    sim: Scenario
    proc: subprocess.Popen[bytes]
    notify: socket.socket
    operator: Ed25519PrivateKey
    gateway_key: PrivateKey
    log: Path
    notes: list[str] = field(default_factory=list)
    bg: BackgroundScenario | None = None  # runs ``sim`` on its own loop: ``bg.call(...)``
    proxy: Proxy | None = None

    def endpoint_fault(self, endpoint: str, kind: str) -> None:
        """Switch a simulated Modbus TCP endpoint's fault ("refuse", "stall", "none")."""
        assert self.bg is not None
        self.bg.call(lambda: self.sim.endpoint_fault(endpoint, kind))

    @property
    def socket_path(self) -> Path:
        return self.dir / "run" / "control.sock"

    def cli(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "edge_agent.cli.main", *args], capture_output=True,
            text=True, timeout=timeout, check=False,
            env=dict(os.environ, EDGE_AGENT_SOCKET=str(self.socket_path)))

    def wait_notify(self, needle: str, timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(needle in n for n in self.notes):
                return True
            self.notify.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                self.notes.append(self.notify.recv(4096).decode())
            except TimeoutError:
                break
        return any(needle in n for n in self.notes)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def start_agent(d: Path, config: Path, notify_path: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, NOTIFY_SOCKET=str(notify_path), WATCHDOG_USEC="1000000")
    with open(d / "agent.log", "ab") as log:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "edge_agent.cli.main", "run", "--config", str(config)],
            stdout=log, stderr=log, env=env)


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    yield from run_gateway(tmp_path)


@pytest.fixture
def open_gateway() -> Iterator[Gateway]:
    """A gateway under a directory other uids may traverse (pytest's tmp_path is root's 0700),
    for tests that run the CLI or the service's checks as a throwaway uid. Needs root."""
    from tests.e2e.technician import need_root, open_dir

    need_root()
    with open_dir() as base:
        yield from run_gateway(base)


def run_gateway(
    tmp_path: Path,
    *,
    edit: Callable[[str], str] | None = None,
    proxied: bool = False,
    broker_persistence: bool = False,
) -> Iterator[Gateway]:
    """The gateway fixture's body, for fixtures that need it under another directory; ``edit``
    changes the config text, ``proxied`` puts a ``Proxy`` (gw.proxy) between agent and broker."""
    broker = Mosquitto(tmp_path / "broker", persistence=broker_persistence)
    broker.start()
    proxy = Proxy(broker.port) if proxied else None
    bg = BackgroundScenario.load(str(HERE / "mini.toml"))
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    proc: subprocess.Popen[bytes] | None = None
    gw: Gateway | None = None
    try:
        sim = bg.start()
        d = tmp_path / "gw"
        port = proxy.port if proxy is not None else broker.port
        config = sim.write_config(d, mqtt_port=port, gateway_id=GW)
        ops = d / "operators"
        ops.mkdir()
        operator = generate_signing_key(tmp_path / "operator.key")
        (ops / "operator.pub").write_bytes(public_pem(operator))
        text = config.read_text().replace(
            "[keys]\n",
            f'[commands]\nallow_unsynced_clock = true\n\n[keys]\ncommand_keys = "{ops}"\n')
        text = text.replace("[uplink]\n", "[uplink]\nstatus_interval = 1\n")
        text += ('\n[batch]\nmax_readings = 50\nmax_ms = 200\n'
                 '\n[health]\nprometheus_textfile = "metrics.prom"\n')
        config.write_text(edit(text) if edit is not None else text)
        notify_path = tmp_path / "notify.sock"
        notify.bind(str(notify_path))
        proc = start_agent(d, config, notify_path)
        gw = Gateway(d, config, broker, sim, proc, notify, operator,
                     load_signing_key(d / "signing.key"), d / "agent.log", bg=bg,
                     proxy=proxy)
        assert gw.wait_notify("READY=1", 30), gw.log_text()[-3000:]
        yield gw
    finally:
        if gw is not None:
            proc = gw.proc  # tests may have restarted the agent
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        notify.close()
        bg.stop()
        if proxy is not None:
            proxy.close()
        broker.stop()


DISK = 320 * 1024  # the budget: a disk smaller than the smallest cap (1 MiB), ~160 KiB for batches


def chattier(text: str, into: Path, every_s: float = 0.25) -> str:
    """The shipped profiles without deadbands, every point read and reported every ``every_s``."""
    m = re.search(r'^profiles_dir = "(.*)"$', text, re.M)
    assert m is not None
    into.mkdir()
    for f in Path(m.group(1)).glob("*.toml"):
        body = re.sub(r"^(deadband|deadband_percent)\s*=.*$", "", f.read_text(), flags=re.M)
        body = re.sub(r"^(heartbeat|interval) = ", rf"\1 = {every_s} # ", body, flags=re.M)
        (into / f.name).write_text(body)
    return text.replace(m.group(0), f'profiles_dir = "{into}"')


@pytest.fixture
def gw_tiny_outbox(tmp_path: Path) -> Iterator[Gateway]:
    """A proxied gateway reporting every point every 0.25 s, its outbox on a tmpfs smaller than
    the smallest cap (the disk is the budget): drops within seconds of an outage."""
    with small_fs(tmp_path / "fs", DISK) as fs:

        def edit(text: str) -> str:
            text = chattier(text, tmp_path / "profiles")
            return text + f'\n[outbox]\npath = "{fs}/outbox.sqlite"\ncap = "1MiB"\n'

        yield from run_gateway(tmp_path, edit=edit, proxied=True)
