"""kill -9 of the real daemon at every stage of applying a bundle (before it arrives, while it is
staged, while the daemon stops for the controlled restart, in probation): the gateway always ends
on the old or the new configuration, whole (its hash is one of the two bundles'), never without
one that starts; what it admitted it finishes (committed) and reports, signed.

And a bundle that cuts the gateway off (its uplink at a port nobody listens on) is rolled back by
the gateway itself, across two controlled restarts, and the rollback is reported once it is back."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest

from edge_agent.cli.operator_mqtt import read_result
from edge_agent.control.client import ControlUnavailable
from edge_agent.rollout.bundle import decode_bundle
from edge_agent.rollout.store import BundleStore
from edge_agent.trust.cose import parse1
from edge_agent.trust.keys import kid_of
from simulators.loopback import free_port
from tests.support_broker import Subscriber

from .fleet import EXIT_RESTART, Fleet, FleetGateway

DELAYS = (0.0, 0.02, 0.08, 0.3, 1.0, 3.5)  # after the publish: each lands in another stage


def wait(pred: Callable[[], object], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.2)
    return bool(pred())


def settled(gw: FleetGateway) -> dict[str, Any] | None:
    """The running gateway's config state once no probation is under way."""
    try:
        st = gw.call("config_state")
    except (ControlUnavailable, OSError):
        return None
    return st if st["state"] == "committed" else None


def reported(sub: Subscriber, gw: FleetGateway, want: tuple[int, str, str]) -> bool:
    return want in results(sub, gw)


def results(sub: Subscriber, gw: FleetGateway) -> list[tuple[int, str, str]]:
    keys = {kid_of(gw.key.public_key()): gw.key.public_key()}
    out = []
    for p in sub.payloads():
        r = read_result(p, keys).result
        out.append((r.version, r.state, r.reason))
    return out


@pytest.mark.timeout(400)
def test_kill9_at_every_stage_of_an_apply(single: Fleet) -> None:
    f = single
    gw = f.gateways["gw-a"]
    sub = Subscriber(f.broker.port, "edge/gw-a/config/res")
    try:
        assert wait(lambda: settled(gw), 30)
        hashes = {0: settled(gw)["hash"]}  # type: ignore[index]
        running = 0
        for i, delay in enumerate(DELAYS, start=1):
            # odd versions change [batch] (a controlled restart), even ones a device (in place)
            text = (f.managed + f"\n[batch]\nmax_readings = {20 + i}\n" if i % 2
                    else f.managed.replace('name = "env-01"', 'name = "env-01"\ninterval = '
                                           f"{10 + i}", 1))
            bundle = f.sign(i, text, "--gateway", "gw-a", "--probation", "5")
            hashes[i] = decode_bundle(parse1(bundle.read_bytes())[2]).hash.hex()
            sub.client.publish("edge/gw-a/config", bundle.read_bytes(), qos=1)
            time.sleep(delay)
            gw.proc.kill9()
            assert wait(lambda: settled(gw), 60), gw.log_text()[-3000:]
            st = settled(gw)
            assert st is not None
            # old or new, whole: the running configuration hashes to one of the two bundles
            assert (st["version"], st["hash"]) in ((running, hashes[running]), (i, hashes[i])), st
            store = BundleStore(gw.dir / "state")
            state = store.load()
            assert not state.unreadable and state.probation is None
            if st["version"] == i:  # admitted: it went through probation and says so, signed
                assert wait(partial(reported, sub, gw, (i, "committed", "")), 20), \
                    results(sub, gw)
                running = i
            else:  # lost before it was admitted: nothing was passed, it can be sent again
                assert state.highest_version < i
                assert all(v != i or s == "applying" for v, s, _ in results(sub, gw))
            print(f"kill after {delay:.2f} s: runs version {st['version']} (sent {i})")
        assert running >= 3, "no apply survived: the kills all came too early to test much"
        # a kill may find the process just ended for its controlled restart (exit 75)
        assert gw.proc.exits.count(-9) >= len(DELAYS) - 2, gw.proc.exits
    finally:
        sub.close()


@pytest.mark.timeout(300)
def test_a_bundle_that_cuts_the_uplink_is_rolled_back_by_the_gateway(single: Fleet) -> None:
    f = single
    gw = f.gateways["gw-a"]
    sub = Subscriber(f.broker.port, "edge/gw-a/config/res")
    try:
        assert wait(lambda: settled(gw), 30)
        dead = free_port()
        cut = f.managed.replace(f"port = {f.broker.port}", f"port = {dead}")
        assert cut != f.managed
        bundle = f.sign(1, cut, "--gateway", "gw-a", "--probation", "5")
        sub.client.publish("edge/gw-a/config", bundle.read_bytes(), qos=1)
        # applying, restart onto the dead port, probation fails, restart back, then reported
        assert wait(lambda: (1, "rolled_back", "uplink_down") in results(sub, gw), 90), (
            results(sub, gw), gw.log_text()[-3000:])
        assert gw.proc.exits.count(EXIT_RESTART) == 2
        st = settled(gw)
        assert st is not None and st["version"] == 0 and st["source"] == "local"
        assert st["last_rollout"]["state"] == "rolled_back"
        assert (1, "applying", "") in results(sub, gw)
    finally:
        sub.close()
