"""A bundle that moves the uplink must prove the new one on real parts (the daemon, a mosquitto
with an ACL): connected to "some broker" is not enough -- a batch acknowledged and the config
topic's subscription granted on the new settings, or the gateway rolls back (it would be
stranded: nothing it sends arrives, no bundle reaches it)."""

from __future__ import annotations

import pytest

from tests.support_broker import Subscriber

from .fleet import Fleet
from .test_kill9 import results, settled, wait


@pytest.mark.timeout(300)
def test_a_moved_uplink_must_prove_itself_or_roll_back(acl_single: Fleet) -> None:
    f = acl_single
    gw = f.gateways["gw-a"]
    edge = Subscriber(f.broker.port, "edge/gw-a/config/res")
    metro = Subscriber(f.broker.port, "metro/gw-a/config/res")
    try:
        assert wait(lambda: settled(gw), 30)
        assert 'topic_prefix = "edge"' not in f.managed  # the default prefix
        # a prefix the broker's ACL does not grant: it connects, and is stranded
        city = f.managed.replace("[uplink]\n", '[uplink]\ntopic_prefix = "city"\n')
        b1 = f.sign(1, city, "--gateway", "gw-a", "--probation", "6")
        edge.client.publish("edge/gw-a/config", b1.read_bytes(), qos=1)
        assert wait(lambda: (1, "rolled_back", "uplink_unproven") in results(edge, gw), 90), (
            results(edge, gw), gw.log_text()[-3000:])
        st = settled(gw)
        assert st is not None and st["version"] == 0 and st["source"] == "local"
        assert "rollout_rolled_back version=1 reason=uplink_unproven" in gw.log_text()

        # a prefix it grants: proven (batches acknowledged, subscription granted), committed
        moved = f.managed.replace("[uplink]\n", '[uplink]\ntopic_prefix = "metro"\n')
        b2 = f.sign(2, moved, "--gateway", "gw-a", "--probation", "6")
        edge.client.publish("edge/gw-a/config", b2.read_bytes(), qos=1)
        assert wait(lambda: (2, "committed", "") in results(metro, gw), 90), (
            results(metro, gw), gw.log_text()[-3000:])
        st = settled(gw)
        assert st is not None and st["version"] == 2
    finally:
        edge.close()
        metro.close()
