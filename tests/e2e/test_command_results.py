"""Command results through the running daemon and a real mosquitto: a result the broker never
acknowledged is published again after the daemon's restart, and a broken replay store still gives
every command an audit line (naming its signer) and a signed result."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from edge_agent.commands.model import Action, Command, Result, decode_result, encode_command
from edge_agent.trust.cose import sign1, verify1
from edge_agent.trust.keys import kid_of
from tests.support_broker import Subscriber

from .conftest import GW, Gateway, start_agent

RES = f"edge/{GW}/cmd/res"


def wait(pred: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return bool(pred())  # type: ignore[operator]


def signed(gw: Gateway, cmd: Command) -> bytes:
    return sign1(encode_command(cmd), gw.operator, kid_of(gw.operator.public_key()))


def new_command(ctr: int, action: Action, **kw: object) -> Command:
    now = int(time.time())
    return Command(os.urandom(16), now, now + 300, ctr, GW, action,
                   str(kw.get("device", "")), str(kw.get("point", "")),
                   kw.get("value"))  # type: ignore[arg-type]


def results(gw: Gateway, sub: Subscriber) -> list[Result]:
    keys = {kid_of(gw.gateway_key.public_key()): gw.gateway_key.public_key()}
    return [decode_result(verify1(p, keys)[1]) for p in sub.payloads(RES)]


def publish(gw: Gateway, msg: bytes) -> None:
    pub = Subscriber(gw.broker.port, "unused/#")
    try:
        pub.client.publish(f"edge/{GW}/cmd", msg, qos=1).wait_for_publish(5)
    finally:
        pub.close()


def connected(gw: Gateway) -> None:
    """Until the daemon's uplink session is up (and so subscribed to its command topic)."""
    def up() -> bool:
        st = gw.cli("status", "--json")
        return st.returncode == 0 and json.loads(st.stdout)["uplink"]["connected"] is True
    assert wait(up, 30), gw.log_text()[-2000:]
    time.sleep(0.3)  # the SUBSCRIBE follows the CONNACK


def restart(gw: Gateway, sig: int = signal.SIGKILL) -> None:
    gw.proc.send_signal(sig)
    gw.proc.wait(20)
    gw.notes.clear()
    gw.proc = start_agent(gw.dir, gw.config, gw.dir.parent / "notify.sock")
    assert gw.wait_notify("READY=1", 30), gw.log_text()[-2000:]


@pytest.mark.timeout(150)
def test_a_result_the_broker_never_acknowledged_is_published_after_a_restart(
        gateway: Gateway) -> None:
    gw = gateway
    kid = kid_of(gw.operator.public_key())
    assert wait(lambda: gw.cli("read", "lamp-01", "dimming").returncode == 0, 30)
    connected(gw)
    # the lamp answers 4 s late: the write waits out its timeout, and meanwhile the broker dies
    gw.sim.fault("lamp-01", "slow", slow_s=4.0)
    cmd = new_command(1, Action.WRITE, device="lamp-01", point="dimming", value=30)
    publish(gw, signed(gw, cmd))
    time.sleep(0.5)  # delivered to the daemon (its write is now waiting for the lamp)
    gw.broker.stop()
    assert wait(lambda: f"id={cmd.id.hex()}" in gw.log_text(), 30), gw.log_text()[-2000:]
    line = next(x for x in gw.log_text().splitlines() if f"id={cmd.id.hex()}" in x)
    assert f"kid={kid.hex()}" in line and "reason=device_error" in line, line
    time.sleep(0.5)
    gw.proc.send_signal(signal.SIGKILL)  # the result was never PUBACKed: only the disk has it
    gw.proc.wait(10)
    gw.sim.fault("lamp-01", "none")

    gw.broker.start()
    sub = Subscriber(gw.broker.port, RES)
    try:
        restart(gw, signal.SIGKILL)
        assert wait(lambda: any(r.id == cmd.id for r in results(gw, sub)), 30), (
            gw.log_text()[-2000:])
        got = next(r for r in results(gw, sub) if r.id == cmd.id)
        assert (got.ok, got.reason, got.kid) == (False, "device_error", kid)
        # the technician can look it up too: the stored result, now acknowledged
        assert wait(lambda: b'"acked": true' in gw.cli(
            "command", "show", "--id", cmd.id.hex(), "--json").stdout.encode(), 10)
        # acknowledged now: a further restart does not publish it again
        n = len(sub.payloads(RES))
        restart(gw, signal.SIGTERM)
        connected(gw)
        ping = new_command(2, Action.PING)
        publish(gw, signed(gw, ping))
        assert wait(lambda: any(r.id == ping.id for r in results(gw, sub)), 20)
        assert [r.id for r in results(gw, sub)[n:]] == [ping.id]
    finally:
        sub.close()


def corrupt(db: Path) -> None:
    for f in db.parent.glob(db.name + "*"):
        size = f.stat().st_size
        with open(f, "r+b") as fh:
            fh.write(os.urandom(size))


@pytest.mark.timeout(120)
def test_a_broken_replay_store_refuses_audits_and_answers(gateway: Gateway) -> None:
    gw = gateway
    kid = kid_of(gw.operator.public_key())
    sub = Subscriber(gw.broker.port, RES)
    try:
        connected(gw)
        first = new_command(1, Action.PING)
        publish(gw, signed(gw, first))
        assert wait(lambda: any(r.id == first.id for r in results(gw, sub)), 20)
        corrupt(gw.dir / "state" / "commands.db")  # the card under the replay store fails
        cmd = new_command(2, Action.WRITE, device="lamp-01", point="dimming", value=40)
        publish(gw, signed(gw, cmd))
        assert wait(lambda: any(r.id == cmd.id for r in results(gw, sub)), 20), (
            gw.log_text()[-2000:])
        got = next(r for r in results(gw, sub) if r.id == cmd.id)
        assert (got.ok, got.reason, got.kid) == (False, "replay_store_unavailable", kid)
        line = next(x for x in gw.log_text().splitlines()
                    if "command_audit" in x and f"id={cmd.id.hex()}" in x)
        assert f"kid={kid.hex()} action=write device=lamp-01 point=dimming" in line, line
        assert "accepted=false reason=replay_store_unavailable" in line
        assert gw.proc.poll() is None  # polling and forwarding go on
    finally:
        sub.close()
