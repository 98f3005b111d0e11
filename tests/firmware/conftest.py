"""Fixtures for the node code on CPython: the ``machine`` shim, node modules imported fresh from
firmware_bridge/node (or with a generated map from a test directory), a node running in a thread
behind a pty, and the real agent (``edge-agent run``) as a child process polling it; all torn down
after the test."""

from __future__ import annotations

import importlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from edge_agent.trust.keys import generate_signing_key
from firmware_bridge.sources import node_dir
from tests.firmware import shim
from tests.firmware.shim import machine

NODE_DIR = node_dir()
REPO = Path(__file__).resolve().parents[2]
PROFILES = REPO / "device_profiles"
NODE_MODULES = ("crc16", "regmap", "modbus_slave", "node", "main", "device_map")


def load_file(path: Path, name: str) -> ModuleType:
    """Import one node module from its file under a private name (needs the shim installed)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def regmap_mod() -> Iterator[ModuleType]:
    """node/regmap.py, for pure-logic tests (hypothesis needs a non-function fixture)."""
    shim.install()
    try:
        yield load_file(NODE_DIR / "regmap.py", "fw_regmap")
    finally:
        shim.uninstall()


@dataclass
class NodeModules:
    crc16: ModuleType
    regmap: ModuleType
    modbus_slave: ModuleType
    node: ModuleType
    main: ModuleType
    device_map: ModuleType


NodeLoader = Callable[..., NodeModules]


@pytest.fixture
def node_env() -> Iterator[NodeLoader]:
    """``load(map_dir=None)``: import the node modules as the board would (top-level names),
    with ``device_map`` from ``map_dir`` if given."""
    shim.install()
    added: list[str] = []

    def load(map_dir: Path | None = None) -> NodeModules:
        for name in NODE_MODULES:
            sys.modules.pop(name, None)
        for p in (str(NODE_DIR), *([str(map_dir)] if map_dir else [])):
            sys.path.insert(0, p)
            added.append(p)
        return NodeModules(*(importlib.import_module(n) for n in NODE_MODULES))

    try:
        yield load
    finally:
        for p in added:
            sys.path.remove(p)
        for name in NODE_MODULES:
            sys.modules.pop(name, None)
        machine.detach_all()
        shim.uninstall()


@dataclass
class NodeThread:
    """Runs ``node.run`` in a thread until ``stop()``; re-raises what the node raised."""

    node: Any
    error: list[BaseException] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> NodeThread:
        self._thread = threading.Thread(target=self._run, name="fw-node", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            self.node.run(self._stop.is_set)
        except BaseException as exc:  # handed to the test
            self.error.append(exc)

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def stop(self) -> None:
        self._stop.set()
        self.join(5)
        self._thread = None
        if self.error:
            first = self.error[0]
            self.error.clear()  # handed over: the fixture does not report it again
            raise first


@pytest.fixture
def run_node() -> Iterator[Callable[[Any], NodeThread]]:
    started: list[NodeThread] = []

    def start(node: Any) -> NodeThread:
        t = NodeThread(node).start()
        started.append(t)
        return t

    yield start
    for t in started:
        t._stop.set()
        t.join(5)
    errors = [e for t in started for e in t.error]
    if errors:
        raise AssertionError(f"the node thread raised: {errors!r}")


# The technician CLI, niced: its interpreter start-up must not starve the node thread (a board
# answers in microseconds; a CPython thread on a busy host can miss the agent's timeout).
CLI = ("nice", "-n", "10", sys.executable, "-m", "edge_agent.cli.main")


@dataclass
class AgentProcess:
    """``edge-agent run --config DIR/agent.toml`` under a systemd-like notify socket."""

    dir: Path
    proc: subprocess.Popen[bytes]
    notify: socket.socket
    notes: list[str] = field(default_factory=list)

    @property
    def socket_path(self) -> Path:
        return self.dir / "run" / "control.sock"

    @property
    def env(self) -> dict[str, str]:
        return dict(os.environ, EDGE_AGENT_SOCKET=str(self.socket_path))

    def cli(self, *args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*CLI, *args],
                              capture_output=True, text=True, timeout=timeout, check=False,
                              env=self.env)

    def log_text(self) -> str:
        return (self.dir / "agent.log").read_text(errors="replace")

    def wait_notify(self, needle: str, timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        while not any(needle in n for n in self.notes) and self.proc.poll() is None:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.notify.settimeout(min(left, 0.5))
            try:
                self.notes.append(self.notify.recv(4096).decode())
            except TimeoutError:
                continue
        return any(needle in n for n in self.notes)


AgentStarter = Callable[[str], AgentProcess]


@pytest.fixture
def rtu_agent(tmp_path: Path, run_node: Any) -> Iterator[AgentStarter]:
    """``start(devices_and_buses_toml)``: write agent.toml (state, runtime dir, outbox and a fresh
    signing key under tmp_path; no [uplink]) with the given [[buses]]/[[devices]] text, start the
    agent and wait for READY=1. Stopped with SIGTERM before the node threads (``run_node``)."""
    started: list[AgentProcess] = []

    def start(body: str) -> AgentProcess:
        d = tmp_path / f"agent{len(started)}"
        d.mkdir()
        key = d / "signing.key"
        generate_signing_key(key)
        config = d / "agent.toml"
        config.write_text(
            f'gateway_id = "gw-fw-node"\nprofiles_dir = "{PROFILES}"\n'
            f'state_dir = "{d / "state"}"\nruntime_dir = "{d / "run"}"\n\n{body}\n'
            f'[outbox]\npath = "{d / "state" / "outbox.sqlite"}"\n\n'
            f'[batch]\nmax_ms = 200\n\n[keys]\nsigning_key = "{key}"\n')
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            notify.bind(str(d / "notify.sock"))
            env = dict(os.environ, NOTIFY_SOCKET=str(d / "notify.sock"))
            with open(d / "agent.log", "ab") as log:  # the child keeps its own descriptor
                proc = subprocess.Popen(
                    [sys.executable, "-m", "edge_agent.cli.main", "run", "--config", str(config)],
                    stdout=log, stderr=log, env=env)
        except BaseException:
            notify.close()
            raise
        agent = AgentProcess(d, proc, notify)
        started.append(agent)
        assert agent.wait_notify("READY=1", 30), agent.log_text()[-3000:]
        return agent

    yield start
    for agent in started:
        if agent.proc.poll() is None:
            agent.proc.send_signal(signal.SIGTERM)
            try:
                agent.proc.wait(15)
            except subprocess.TimeoutExpired:
                agent.proc.kill()
                agent.proc.wait()
        agent.notify.close()
