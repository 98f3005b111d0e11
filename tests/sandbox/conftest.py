"""A gateway running as the shipped unit runs it: the real ``edge-agent run`` under the sandbox of
systemd/edge-agent.service (tests/sandbox/harness.py), a real mosquitto, the simulated street of
tests/e2e/mini.toml (Modbus TCP poles, RS-485 meters on a pty, an NB-IoT modem), the example
config's paths, an operator key on the allowlist, a configuration operator's key on its own
allowlist (``config_keys``) and no ``allow_unsynced_clock``."""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.control.client import ControlClient
from edge_agent.platform.clock import ClockSync, flag_synced
from edge_agent.trust.ed25519 import PrivateKey
from edge_agent.trust.keys import generate_signing_key, load_signing_key, public_pem
from simulators.scenario import BackgroundScenario, Scenario
from tests.sandbox.harness import ROOT, UNIT_FILE, UnitHarness, sandbox_unavailable
from tests.sandbox.systemd_run import SystemdRunner, systemd_run_unavailable
from tests.sandbox.unit import UnitSandbox
from tests.support_broker import Mosquitto

GW = "gw-sandbox"
MINI = ROOT / "tests" / "e2e" / "mini.toml"
EXAMPLE = ROOT / "device_profiles" / "examples" / "street-gateway.toml"
TIMESYNC_FLAG = "/run/systemd/timesync/synchronized"  # systemd-timesyncd touches it on each sync


Runner = UnitHarness | SystemdRunner


@dataclass
class SandboxedGateway:
    harness: Runner  # the unit's sandbox without systemd, or a transient unit of systemd's
    broker: Mosquitto
    sim: Scenario
    operator: Ed25519PrivateKey
    gateway_key: PrivateKey
    example: dict[str, Any]
    expected_synced: bool  # what the service should conclude from the time source it may see
    config_operator: Ed25519PrivateKey | None = None  # signs configuration bundles

    @property
    def control_socket(self) -> Path:
        return self.harness.host_path(self.example["runtime_dir"]) / "control.sock"

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        with ControlClient(self.control_socket) as c:
            return c.call(op, **args)

    def log_text(self) -> str:
        return self.harness.log_text()


def example_config() -> dict[str, Any]:
    with open(EXAMPLE, "rb") as f:
        return tomllib.load(f)


def write_config(h: Runner, sim: Scenario, port: int, operator: Ed25519PrivateKey,
                 scratch: Path, config_operator: Ed25519PrivateKey | None = None
                 ) -> PrivateKey:
    """The simulator's buses and devices with the example config's paths; the files placed on the
    host where the sandbox shows them on those paths, owned as provisioning leaves them."""
    ex = example_config()
    config_operator = config_operator or Ed25519PrivateKey.generate()
    generated = sim.write_config(scratch, mqtt_port=port, gateway_id=GW).read_text()
    key_path = ex["keys"]["signing_key"]
    key_host = h.host_path(key_path)
    key_host.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chown(key_host.parent, h.uid, h.gid)
    shutil.copy(scratch / "signing.key", key_host)
    os.chown(key_host, h.uid, h.gid)
    key_host.chmod(0o600)
    ops = h.host_path(ex["keys"]["command_keys"])
    ops.mkdir(parents=True, exist_ok=True)
    (ops / "operator.pub").write_bytes(public_pem(operator))
    (ops / "operator.pub").chmod(0o644)
    ops.chmod(0o755)
    config_ops = h.host_path(ex["keys"]["config_keys"])
    config_ops.mkdir(parents=True, exist_ok=True)
    (config_ops / "config-operator.pub").write_bytes(public_pem(config_operator))
    (config_ops / "config-operator.pub").chmod(0o644)
    config_ops.chmod(0o755)
    text = re.sub(r'(?m)^state_dir = .*$', f'state_dir = "{ex["state_dir"]}"', generated)
    text = re.sub(r'(?m)^runtime_dir = .*$', f'runtime_dir = "{ex["runtime_dir"]}"', text)
    text = re.sub(r'(?m)^signing_key = .*$',
                  f'signing_key = "{key_path}"\ncommand_keys = "{ex["keys"]["command_keys"]}"'
                  f'\nconfig_keys = "{ex["keys"]["config_keys"]}"',
                  text)
    text = text.replace("[uplink]\n", "[uplink]\nstatus_interval = 1\n")
    text += ("\n[batch]\nmax_readings = 50\nmax_ms = 200\n"
             f'\n[health]\nprometheus_textfile = "{ex["health"]["prometheus_textfile"]}"\n')
    config = h.host_path(h.exec_start()[h.exec_start().index("--config") + 1])
    config.write_text(text)
    config.chmod(0o640)
    os.chown(config, 0, h.gid)
    return load_signing_key(scratch / "signing.key")  # the same key, owned by root here


@pytest.fixture(scope="session")
def installed_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What ``scripts/install --root`` lays down (once per session): the sandbox runs its
    /opt/edge-agent/venv/bin/edge-agent, the unit's ExecStart= unchanged."""
    root = tmp_path_factory.mktemp("installed")
    # a venv of its own, as on a gateway (no --system-site-packages: the base interpreter's
    # packages would stand in for a dependency the production set forgot to declare)
    done = subprocess.run([str(ROOT / "scripts" / "install"), "--root", str(root)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return root


@pytest.fixture(scope="session")
def unit() -> UnitSandbox:
    why = sandbox_unavailable()
    if why:
        pytest.skip(why)
    return UnitSandbox.load(UNIT_FILE)


def start_gateway(unit: UnitSandbox, tmp_path: Path, *, launcher: str,
                  clock_flag_age_s: float | None, installed: Path | None = None
                  ) -> Iterator[SandboxedGateway]:
    """``clock_flag_age_s``: the timesyncd flag the harness shows, that many seconds old; None: no
    flag at all. Under systemd-run the host's own time source stands instead."""
    if launcher == "systemd-run":
        why = systemd_run_unavailable(unit)
        if why:
            pytest.skip(why)
    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    bg = BackgroundScenario.load(str(MINI))
    h: Runner | None = None
    try:
        h = (SystemdRunner(unit, tmp_path / "sandbox") if launcher == "systemd-run"
             else UnitHarness(unit, tmp_path / "sandbox", install_root=installed))
        sim = bg.start()
        for path in sim.paths.values():  # the RS-485 line and the modem: ptys, as udev does
            h.grant_device(path)
        if isinstance(h, SystemdRunner):  # the unit denies adjtimex: the flag decides
            expected = ClockSync(adjtimex=lambda: errno.EPERM)()
        elif clock_flag_age_s is not None:
            h.extra_files[TIMESYNC_FLAG] = b""
            h.mtimes[TIMESYNC_FLAG] = time.time() - clock_flag_age_s
            expected = flag_synced(clock_flag_age_s)
        else:  # hide the host's own flag, if this host runs timesyncd
            h.whiteouts.append(TIMESYNC_FLAG)
            expected = False
        operator = generate_signing_key(tmp_path / "operator.key")
        config_op = generate_signing_key(tmp_path / "config-operator.key")
        gw_key = write_config(h, sim, broker.port, operator, tmp_path / "generated", config_op)
        h.start()
        gw = SandboxedGateway(h, broker, sim, operator, gw_key, example_config(), expected,
                              config_op)
        assert h.wait_notify("READY=1", 45), gw.log_text()[-4000:]
        yield gw
    finally:
        if h is not None:
            h.close()
        bg.stop()
        broker.stop()


@pytest.fixture(params=["harness", "systemd-run"])
def synced_gateway(request: pytest.FixtureRequest, unit: UnitSandbox, tmp_path: Path
                   ) -> Iterator[SandboxedGateway]:
    """The installed tree's daemon; the host's time service (systemd-timesyncd) synchronised the
    clock a minute ago (under systemd-run: whatever the host's time service did)."""
    installed = (request.getfixturevalue("installed_tree") if request.param == "harness"
                 else None)
    yield from start_gateway(unit, tmp_path, launcher=request.param, clock_flag_age_s=60,
                             installed=installed)


@pytest.fixture
def harness_gateway(unit: UnitSandbox, tmp_path: Path) -> Iterator[SandboxedGateway]:
    """The harness only, clock synchronised: for checks to add (export, doctor, ...)."""
    yield from start_gateway(unit, tmp_path, launcher="harness", clock_flag_age_s=60)


@pytest.fixture
def unsynced_gateway(unit: UnitSandbox, tmp_path: Path) -> Iterator[SandboxedGateway]:
    """The last synchronisation is 10 hours old: past the 16 s maximum error (500 ppm drift)."""
    yield from start_gateway(unit, tmp_path, launcher="harness", clock_flag_age_s=10 * 3600)


@pytest.fixture
def sourceless_gateway(unit: UnitSandbox, tmp_path: Path) -> Iterator[SandboxedGateway]:
    """No time source the sandbox lets the daemon see (chrony, ntpd, or none at all)."""
    yield from start_gateway(unit, tmp_path, launcher="harness", clock_flag_age_s=None)
