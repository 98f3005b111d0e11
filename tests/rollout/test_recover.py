"""A damaged state.json (the rollout store) on the real daemon: the anti-rollback survives -- the
highest version comes back from the gateway's own retained status (a rolled-back version's
directory is gone from disk), a replay is refused, and one log line says so."""

from __future__ import annotations

import json

import pytest

from tests.support_broker import Subscriber

from .fleet import Fleet
from .test_kill9 import results, settled, wait


@pytest.mark.timeout(300)
def test_damaged_state_recovers_the_highest_version_from_the_retained_status(
        single: Fleet) -> None:
    f = single
    gw = f.gateways["gw-a"]
    sub = Subscriber(f.broker.port, "edge/gw-a/config/res")
    try:
        assert wait(lambda: settled(gw), 30)
        b1 = f.sign(1, f.managed, "--gateway", "gw-a", "--probation", "5")
        sub.client.publish("edge/gw-a/config", b1.read_bytes(), qos=1)
        assert wait(lambda: (1, "committed", "") in results(sub, gw), 60), gw.log_text()[-2000:]
        bad = f.managed.replace("unit_id = 1\n", "unit_id = 9\n")
        b2 = f.sign(2, bad, "--gateway", "gw-a", "--probation", "5")
        sub.client.publish("edge/gw-a/config", b2.read_bytes(), qos=1)
        assert wait(lambda: (2, "rolled_back", "devices_worse") in results(sub, gw), 60), (
            results(sub, gw), gw.log_text()[-2000:])
        assert wait(lambda: f.status()["gw-a"]["config"]["highest_version"] == 2, 10)
        # only version 1's directory is left: the disk alone says 1
        store = gw.dir / "state" / "config"
        assert [p.name.split("-")[0] for p in (store / "bundles").iterdir()] == ["v1"]

        gw.proc.stop()
        (store / "state.json").write_text('{"format": 1, "current": {"dir"')  # torn write
        gw.start_again()
        assert gw.wait_ready(), gw.log_text()[-3000:]
        assert wait(lambda: "rollout_state_recovered" in gw.log_text(), 30), gw.log_text()[-3000:]
        lines = [ln for ln in gw.log_text().splitlines() if "rollout_state_recovered" in ln]
        assert len(lines) == 1 and "highest_version=2 retained_status=2 bundle_dirs=1" in lines[0]
        assert json.loads((store / "state.json").read_text())["highest_version"] == 2
        assert (store / "state.json.damaged").read_text().startswith('{"format": 1')

        sub.client.publish("edge/gw-a/config", b2.read_bytes(), qos=1)  # the replay
        assert wait(lambda: (2, "refused", "version_passed") in results(sub, gw), 30), (
            results(sub, gw), gw.log_text()[-2000:])
        assert f.status()["gw-a"]["config"]["highest_version"] == 2

        # a technician pins while the daemon is down: written into the state, taken at start
        b3 = f.sign(3, f.managed, "--gateway", "gw-a", "--probation", "5")
        sub.client.publish("edge/gw-a/config", b3.read_bytes(), qos=1)
        assert wait(lambda: (3, "committed", "") in results(sub, gw), 60), gw.log_text()[-2000:]
        gw.proc.stop()
        pin = gw.cli("config", "pin", "--reason", "cabinet flooded", "--config", str(gw.config))
        assert pin.returncode == 0 and "not running" in pin.stdout, pin.stdout + pin.stderr
        gw.start_again()
        assert gw.wait_ready(), gw.log_text()[-3000:]
        st = gw.call("config_state")
        assert st["pinned"] and st["pin_reason"] == "cabinet flooded" and st["source"] == "local"
        unpin = gw.cli("config", "unpin")  # through the running daemon again
        assert unpin.returncode == 0, unpin.stderr
        assert gw.call("config_state")["version"] == 3
    finally:
        sub.close()
