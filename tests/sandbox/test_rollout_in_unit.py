"""Configuration rollout inside the shipped unit's sandbox: /etc is read-only for the daemon, so a
bundle lives in the state directory; a restart-only change ends the daemon with exit 75, which the
unit restarts (here the harness plays systemd: RestartForceExitStatus=75), and the new process
starts on the bundle -- with nothing on the way denied by the sandbox."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import time

import pytest

from edge_agent.profiles.shipped import shipped_dir
from edge_agent.rollout.bundle import Bundle, encode_bundle
from edge_agent.rollout.effective import referenced_profiles
from edge_agent.rollout.results import decode_result
from edge_agent.service.daemon import EXIT_RESTART
from edge_agent.trust.cose import sign1, verify1
from edge_agent.trust.keys import kid_of
from tests.sandbox.conftest import GW, SandboxedGateway
from tests.sandbox.harness import UnitHarness
from tests.sandbox.test_in_unit import DENIED, wait
from tests.support_broker import Subscriber

LOCAL = re.compile(r"(?s)^.*?(\[\[buses\]\].*?)\[keys\].*?(\n\[batch\].*)$")


def managed_part(gw: SandboxedGateway) -> str:
    """The running config without the box's local settings: what an operator's bundle holds."""
    h = gw.harness
    text = h.host_path(h.exec_start()[h.exec_start().index("--config") + 1]).read_text()
    m = LOCAL.match(text)
    assert m is not None, text
    return m.group(1) + m.group(2)


def signed_bundle(gw: SandboxedGateway, version: int, text: str) -> bytes:
    assert gw.config_operator is not None
    now = int(time.time())
    b = Bundle(version, now, now, now + 600, text,
               referenced_profiles(text, shipped_dir(), "managed.toml"), (GW,), {}, 5)
    key = gw.config_operator
    return sign1(encode_bundle(b), key, kid_of(key.public_key()))


def results(gw: SandboxedGateway, sub: Subscriber) -> list[tuple[int, str, str]]:
    keys = {kid_of(gw.gateway_key.public_key()): gw.gateway_key.public_key()}
    out = []
    for p in sub.payloads():
        r = decode_result(verify1(p, keys)[1])
        out.append((r.version, r.state, r.reason))
    return out


@pytest.mark.timeout(240)
def test_bundles_are_applied_inside_the_unit(harness_gateway: SandboxedGateway) -> None:
    gw = harness_gateway
    h = gw.harness
    assert isinstance(h, UnitHarness)  # plays systemd's restart itself
    sub = Subscriber(gw.broker.port, f"edge/{GW}/config/res")
    try:
        managed = managed_part(gw)
        assert wait(lambda: gw.call("status")["result"]["devices"]["up"] >= 4, 30)
        # 1. in place: one device polled at another interval
        v1 = managed.replace('name = "env-01"\n', 'name = "env-01"\ninterval = 15\n', 1)
        assert v1 != managed
        sub.client.publish(f"edge/{GW}/config", signed_bundle(gw, 1, v1), qos=1)
        assert wait(lambda: (1, "committed", "") in results(gw, sub), 40), (
            results(gw, sub), gw.log_text()[-3000:])
        state = gw.call("config_state")["result"]
        assert (state["version"], state["source"], state["state"]) == (1, "bundle", "committed")
        bundles = h.host_path("/var/lib/edge-agent/config/bundles")
        (slot,) = list(bundles.iterdir())
        st = slot.stat()
        assert st.st_uid == h.uid and stat.S_IMODE(st.st_mode) == 0o700  # the unit's UMask
        assert stat.S_IMODE((slot / "agent.toml").stat().st_mode) == 0o600
        # 2. a restart-only change: the daemon ends with 75, the unit starts it on the bundle
        v2 = v1.replace("max_readings = 50", "max_readings = 40")
        assert v2 != v1
        sub.client.publish(f"edge/{GW}/config", signed_bundle(gw, 2, v2), qos=1)
        assert h.running is not None
        assert h.running.proc.wait(30) == EXIT_RESTART, gw.log_text()[-3000:]
        h.notes.clear()
        h.start()  # systemd: RestartForceExitStatus=75
        assert h.wait_notify("READY=1", 45), gw.log_text()[-3000:]
        assert wait(lambda: (2, "committed", "") in results(gw, sub), 40), (
            results(gw, sub), gw.log_text()[-3000:])
        assert gw.call("config_state")["result"]["version"] == 2
        # 3. the technician's pin, from a shell outside the sandbox, as the CLI does it
        pin = subprocess.run(
            [sys.executable, "-m", "edge_agent.cli.main", "config", "pin", "--reason", "test",
             "--json"], capture_output=True, text=True, timeout=60, check=False,
            env=dict(os.environ, EDGE_AGENT_SOCKET=str(gw.control_socket)))
        assert pin.returncode == 0, pin.stdout + pin.stderr
        # the local config differs in [batch]: back to it by the same controlled restart
        assert h.running.proc.wait(30) == EXIT_RESTART, gw.log_text()[-3000:]
        h.notes.clear()
        h.start()
        assert h.wait_notify("READY=1", 45), gw.log_text()[-3000:]
        state = gw.call("config_state")["result"]
        assert (state["source"], state["pinned"], state["version"]) == ("local", True, 0)
    finally:
        sub.close()
    denied = sorted({ln for ln in gw.log_text().splitlines() if DENIED.search(ln)})
    assert not denied, "the sandbox denied:\n" + "\n".join(denied)
