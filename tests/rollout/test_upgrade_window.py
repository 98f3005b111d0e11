"""An upgrade in place while the daemon runs (docs/operations.md: "run scripts/install again to
upgrade"; the installer restarts a running service, but a daemon can still meet a mixed tree:
one replaced by other means, a restart that failed). The daemon imports its rare paths on first
use (fa51c15, issue #15's memory), so the first bundle or remote command after such an upgrade
loads the NEW version's code into the OLD process. When that import fails (the new module needs a
name only the new version of a module loaded at start has), the message must still get its one
signed answer and audit line ("a bug must not leave a bundle / command unanswered").

The real `edge-agent run` runs from a copy of the package (PYTHONPATH), which the test then
upgrades on disk as pip would: both files replaced."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import edge_agent
from edge_agent.commands.model import Action, Command, decode_result, encode_command
from edge_agent.trust.cose import sign1, verify1
from edge_agent.trust.keys import kid_of, load_signing_key
from simulators.scenario import BackgroundScenario
from tests.support_broker import Mosquitto, Subscriber

from .conftest import HERE, TAGS
from .fleet import Fleet, start_fleet, stop_fleet
from .test_kill9 import results, settled, wait


@pytest.fixture
def tree_gateway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Fleet, Path]]:
    """One gateway whose daemon imports edge_agent from a copy under tmp_path (its tree),
    settled and checked to run from that copy."""
    tree = tmp_path / "tree"
    shutil.copytree(Path(edge_agent.__file__).parent, tree / "edge_agent",
                    ignore=shutil.ignore_patterns("__pycache__"))
    init = tree / "edge_agent" / "__init__.py"  # a version that names the copy (status shows it)
    init.write_text(init.read_text().replace('__version__ = "', '__version__ = "tree-'))
    monkeypatch.setenv("PYTHONPATH", str(tree))
    monkeypatch.chdir(tmp_path)  # `python -m` puts the working directory first on sys.path
    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    bg = BackgroundScenario.load(str(HERE / "fleet.toml"))
    fleet: Fleet | None = None
    try:
        fleet = start_fleet(tmp_path / "fleet", bg.start(), broker, ["gw-a"], TAGS)
        gw = fleet.gateways["gw-a"]
        assert wait(lambda: settled(gw), 30), gw.log_text()[-3000:]
        assert gw.call("status")["version"].startswith("tree-")  # the daemon runs from the copy
        yield fleet, tree / "edge_agent"
    finally:
        if fleet is not None:
            stop_fleet(fleet.gateways)
        bg.stop()
        broker.stop()


@pytest.mark.timeout(240)
def test_a_bundle_after_an_in_place_upgrade_still_gets_its_answer(
        tree_gateway: tuple[Fleet, Path]) -> None:
    f, pkg = tree_gateway
    gw = f.gateways["gw-a"]
    # the upgrade: the next version's service/rollout.py gains a name its rollout_apply.py uses
    rollout = pkg / "service" / "rollout.py"
    rollout.write_text(rollout.read_text() + "\nAPPLY_GRACE_S = 5.0  # new in the next version\n")
    apply = pkg / "service" / "rollout_apply.py"
    apply.write_text(apply.read_text().replace(
        "from edge_agent.service.rollout import audit, log",
        "from edge_agent.service.rollout import APPLY_GRACE_S, audit, log  # noqa: F401"))
    sub = Subscriber(f.broker.port, "edge/gw-a/config/res")
    try:
        b1 = f.sign(1, f.managed, "--gateway", "gw-a", "--probation", "5")
        sub.client.publish("edge/gw-a/config", b1.read_bytes(), qos=1)
        answered = wait(lambda: any(v == 1 for v, _s, _r in results(sub, gw)), 15)
        assert answered, ("no signed answer to bundle 1:\n" + gw.log_text()[-3000:])
        assert "config_audit version=1" in gw.log_text()
    finally:
        sub.close()


@pytest.mark.timeout(240)
def test_a_command_after_an_in_place_upgrade_still_gets_its_answer(
        tree_gateway: tuple[Fleet, Path]) -> None:
    f, pkg = tree_gateway
    gw = f.gateways["gw-a"]
    # the upgrade: the next version's commands/model.py (loaded at start: the result store
    # needs it) gains a name its commands/verify.py (loaded at the first command) uses
    model = pkg / "commands" / "model.py"
    model.write_text(model.read_text() + "\nMAX_ARGS = 8  # new in the next version\n")
    verify = pkg / "commands" / "verify.py"
    verify.write_text(verify.read_text().replace(
        "from __future__ import annotations\n",
        "from __future__ import annotations\n\nfrom edge_agent.commands.model import MAX_ARGS\n"))
    now = int(time.time())
    cmd = Command(os.urandom(16), now, now + 120, 1, "gw-a", Action.PING, "", "", None)
    op = load_signing_key(f.command_op)
    msg = sign1(encode_command(cmd), op, kid_of(op.public_key()))
    res = Subscriber(f.broker.port, "edge/gw-a/cmd/res")
    try:
        res.client.publish("edge/gw-a/cmd", msg, qos=1).wait_for_publish(5)
        assert wait(lambda: res.payloads(), 15), ("no signed answer to the command:\n"
                                                  + gw.log_text()[-3000:])
        keys = {kid_of(gw.key.public_key()): gw.key.public_key()}
        assert decode_result(verify1(res.payloads()[-1], keys)[1]).id == cmd.id
        assert "command_audit" in gw.log_text()
    finally:
        res.close()
