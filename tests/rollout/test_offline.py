"""Gateways a rollout cannot reach now, on real parts (three daemons, one mosquitto): an offline
box stays addressed through its last will, is reported "pending" (never passed, never skipped)
and takes the retained bundle when it comes back -- once; a pinned canary stops the rollout."""

from __future__ import annotations

import pytest

from edge_agent.trust.keys import public_pem

from .fleet import Fleet
from .test_fleet import all_up, rollout, wait

BATCH = "\n[batch]\nmax_readings = 20\nmax_ms = 300\n"  # restart-only: a controlled restart


def audited(f: Fleet, gw: str, version: int) -> list[str]:
    return [ln for ln in f.gateways[gw].log_text().splitlines()
            if f"config_audit version={version} " in ln]


@pytest.mark.timeout(600)
def test_offline_gateway_pending_then_catches_up_and_a_pinned_canary_stops(
        harbour: Fleet) -> None:
    f = harbour
    for gateway in f.gateways.values():
        (f.dir / f"{gateway.id}.pub").write_bytes(public_pem(gateway.key))
    assert wait(lambda: all_up(f), 60), {g: s.get("devices") for g, s in f.status().items()}

    # the cabinet loses power: the broker publishes its last will, which keeps its tags
    c = f.gateways["gw-c"]
    c.proc.kill9_down()
    assert wait(lambda: f.status()["gw-c"]["state"] == "offline", 20)
    will = f.status()["gw-c"]
    assert will["tags"] == {"district": "harbour"} and will["config"]["version"] == 0, will
    assert "silent" in will["flags"]
    # "seen": when it was last heard of (its chain witness, made with its batches), not when the
    # session its will belongs to began
    assert will["witness_ms"] > will["ts_ms"] and will["seen_ms"] == will["witness_ms"], will

    # a pinned canary gave no evidence: the rollout stops before any other box
    pin = f.gateways["gw-a"].cli("config", "pin", "--reason", "lamp replacement pole 7")
    assert pin.returncode == 0, pin.stderr
    b1 = f.sign(1, f.managed + BATCH, "--tag", "district=harbour", "--probation", "6")
    code, out = rollout(f, b1)
    gws = out["gateways"]
    assert code == 1 and not out["complete"], out
    assert gws["gw-a"]["outcome"] == "pinned", gws["gw-a"]
    assert "lamp replacement pole 7" in gws["gw-a"]["reason"]
    assert "canary gw-a is pinned" in out["stopped"]
    assert gws["gw-b"]["outcome"] == gws["gw-c"]["outcome"] == "not_sent", out
    assert f.status()["gw-b"]["config"]["version"] == 0
    assert f.gateways["gw-a"].cli("config", "unpin").returncode == 0

    # the canary, then gw-b; gw-c is offline: pending, not passed, not skipped
    code, out = rollout(f, b1)
    gws = out["gateways"]
    assert code == 1 and not out["complete"] and not out["stopped"], out
    assert out["pending"] == ["gw-c"] and gws["gw-c"]["outcome"] == "pending"
    assert "retained" in gws["gw-c"]["reason"] and "last seen" in gws["gw-c"]["reason"]
    assert gws["gw-a"]["outcome"] == gws["gw-b"]["outcome"] == "committed", out

    # power back: gw-c takes the retained bundle by itself, through its probation
    c.start_again()

    def caught_up() -> bool:
        cfg = f.status().get("gw-c", {}).get("config", {})
        return bool(cfg.get("version") == 1 and cfg.get("state") == "committed")

    assert wait(caught_up, 90), c.log_text()[-3000:]
    # the retained bundle comes again with every connection (the controlled restart made one):
    # answered and audited once (applying, committed), then ignored
    assert [ln.split("state=")[1].split()[0] for ln in audited(f, "gw-c", 1)] == [
        "applying", "committed"], audited(f, "gw-c", 1)
    assert len(audited(f, "gw-b", 1)) == 2
