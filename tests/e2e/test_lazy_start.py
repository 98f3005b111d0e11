"""What the daemon holds once started (issue #15's memory): the code of its rare paths -- applying
a configuration bundle, verifying and executing a remote command, the technician's catalog, raw
Modbus, export, answering the control socket -- is imported when first used, not at start. The
real `edge-agent run` (cli/main entry, the mini district on Modbus TCP, a real mosquitto) is
asked for its ``sys.modules`` once it told systemd READY=1 and polled for a second. That the rare
paths still work once loaded is what tests/e2e/test_command_results.py, test_commissioning.py,
test_export.py, tests/control/ and tests/rollout/ show."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.rollout.results import RolloutResult, RolloutResults, encode_result
from edge_agent.trust.cose import sign1
from edge_agent.trust.keys import generate_signing_key, kid_of, load_signing_key, public_pem
from simulators.scenario import BackgroundScenario
from tests.support_broker import Mosquitto, Subscriber

HERE = Path(__file__).resolve().parent

# the daemon started, ready and polling; its modules then, and its exit code after SIGTERM
PROBE = """
import json, os, signal, socket, sys, threading, time
note = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
note.bind(sys.argv[2])
note.settimeout(60)
os.environ["NOTIFY_SOCKET"] = sys.argv[2]
seen = {}
def watch():
    try:
        while b"READY=1" not in note.recv(4096):
            pass
        time.sleep(float(sys.argv[3]))  # first polls, the uplink's connect, inventory round
        seen["modules"] = sorted(sys.modules)
    finally:
        os.kill(os.getpid(), signal.SIGTERM)
threading.Thread(target=watch, daemon=True).start()
from edge_agent.cli.main import main
code = main(["run", "--config", sys.argv[1]])
print(json.dumps({"code": code, **seen}))
"""

# rare paths: loaded on first use
ROLLOUT_APPLY = ("edge_agent.service.rollout_apply", "edge_agent.rollout.verify",
                 "edge_agent.rollout.effective")
# no bundle ever arrived: neither the bundle's code nor the results' (nor their SQLite file)
ROLLOUT_RESULTS = ("edge_agent.rollout.bundle", "edge_agent.rollout.results")
COMMAND_HANDLING = ("edge_agent.commands.audit", "edge_agent.commands.execute",
                    "edge_agent.commands.verify")
COMMAND_STORES = ("edge_agent.commands.results", "edge_agent.commands.model")
# the control socket listens; what answers a connection loads at the first one
CONTROL = ("edge_agent.control.session", "edge_agent.control.protocol")
TECHNICIAN = ("edge_agent.service.commissioning", "edge_agent.bus.raw",
              "edge_agent.service.export", "edge_agent.config.catalog",
              "edge_agent.profiles.display", "edge_agent.service.metrics")


@pytest.fixture
def district(tmp_path: Path) -> Iterator[tuple[Path, Mosquitto]]:
    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    bg = BackgroundScenario.load(str(HERE / "mini.toml"))
    try:
        sim = bg.start()
        config = sim.write_config(tmp_path / "gw", mqtt_port=broker.port, gateway_id="gw-lazy")
        yield config, broker
    finally:
        bg.stop()
        broker.stop()


def started_modules(config: Path, tmp_path: Path, hold_s: float = 1.0) -> set[str]:
    res = subprocess.run([sys.executable, "-c", PROBE, str(config), str(tmp_path / "n.sock"),
                          str(hold_s)],
                         capture_output=True, text=True, timeout=90, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["code"] == 0 and "modules" in out, res.stderr[-3000:]
    mods = set(out["modules"])
    assert {"edge_agent.service.daemon", "edge_agent.poll.engine",
            "edge_agent.uplink.mqtt", "edge_agent.service.rollout"} <= mods
    return mods


def test_started_daemon_holds_no_rare_path_code(district: tuple[Path, Mosquitto],
                                                tmp_path: Path) -> None:
    """No operator keys (remote commands off): none of the command modules either. No bundle
    ever arrived: no rollout result store (module or file)."""
    config, _ = district
    mods = started_modules(config, tmp_path)
    rare = (*ROLLOUT_APPLY, *ROLLOUT_RESULTS, *COMMAND_HANDLING, *COMMAND_STORES, *TECHNICIAN,
            *CONTROL)
    assert [m for m in rare if m in mods] == []
    state = config.parent / "state"
    assert state.is_dir() and not (state / "rollout_results.db").exists()


def test_with_operator_keys_only_the_command_stores_load_at_start(
        district: tuple[Path, Mosquitto], tmp_path: Path) -> None:
    """Remote commands on: the replay guard and the result store open at start (stored results
    are published after every connect); verifying and executing wait for the first command."""
    config, _ = district
    ops = tmp_path / "operators"
    ops.mkdir()
    (ops / "op.pub").write_bytes(public_pem(generate_signing_key(tmp_path / "op.key")))
    config.write_text(config.read_text().replace("[keys]\n", f'[keys]\ncommand_keys = "{ops}"\n'))
    mods = started_modules(config, tmp_path)
    assert [m for m in COMMAND_STORES if m not in mods] == []
    assert [m for m in (*COMMAND_HANDLING, *ROLLOUT_APPLY) if m in mods] == []


def test_results_left_by_an_earlier_run_are_opened_at_start_and_published(
        district: tuple[Path, Mosquitto], tmp_path: Path) -> None:
    """The result store opens at start when an earlier run left its file: a result not yet
    acknowledged by the broker is published after the connect, as it was signed."""
    config, broker = district
    state = config.parent / "state"
    state.mkdir(mode=0o700, exist_ok=True)
    os.chmod(state, 0o700)
    key = load_signing_key(config.parent / "signing.key")
    res = RolloutResult("gw-lazy", 7, "committed", "", time.time_ns())
    cose = sign1(encode_result(res), key, kid_of(key.public_key()))
    store = RolloutResults(state / "rollout_results.db")
    try:
        store.add(res, cose)
    finally:
        store.close()
    sub = Subscriber(broker.port, "edge/gw-lazy/config/res")
    try:
        mods = started_modules(config, tmp_path, hold_s=5.0)  # connected and published by then
        assert "edge_agent.rollout.results" in mods
        assert sub.wait_for(lambda: cose in sub.payloads(), 10), sub.payloads()
    finally:
        sub.close()
