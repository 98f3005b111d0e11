"""No key is ever logged: a whole life of the real agent at debug level, then grep its log.

The agent (the e2e ``gateway`` fixture, started here with EDGE_AGENT_LOG_LEVEL=debug) polls, signs
and forwards batches, executes a signed remote command and a technician write, and is stopped with
SIGTERM. Its log must then contain neither the gateway's signing key nor the operator's key in any
of the forms a careless log line would carry them: the PEM body, the raw 32 bytes as hex (either
case), base64 (standard or URL-safe, with or without padding) or a Python bytes repr.
"""

from __future__ import annotations

import base64
import os
import signal
import time
from collections.abc import Mapping

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.commands.model import Action, Command, decode_result, encode_command
from edge_agent.trust.cose import sign1, verify1
from edge_agent.trust.ed25519 import PrivateKey
from edge_agent.trust.keys import kid_of, private_pem
from tests.support_broker import Subscriber

from .conftest import GW, Gateway


@pytest.fixture
def debug_level(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_AGENT_LOG_LEVEL", "debug")  # read by `edge-agent run`


@pytest.fixture
def gateway(debug_level: None, gateway: Gateway) -> Gateway:
    """The conftest gateway, started after ``debug_level`` so the agent inherits it."""
    return gateway


def secret_forms(key: PrivateKey) -> dict[str, str]:
    """Every text form of a private key worth looking for (name -> needle)."""
    raw = key.private_bytes_raw()
    pem_body = "".join(
        line for line in private_pem(key).decode().splitlines() if not line.startswith("-----")
    )
    forms = {
        "pem_body": pem_body,
        "hex": raw.hex(),
        "HEX": raw.hex().upper(),
        "b64": base64.b64encode(raw).decode(),
        "b64url": base64.urlsafe_b64encode(raw).decode().rstrip("="),
        "b64_nopad": base64.b64encode(raw).decode().rstrip("="),
        "repr": repr(raw)[2:-1],
    }
    # half a key in hex is still too much: a log line cut short must not carry it either
    forms["hex_head"], forms["hex_tail"] = raw[:16].hex(), raw[16:].hex()
    return forms


def leaks(text: str, keys: Mapping[str, PrivateKey]) -> list[str]:
    lowered = text.lower()
    found: list[str] = []
    for who, key in keys.items():
        for form, needle in secret_forms(key).items():
            hay = lowered if form.startswith("hex") else text
            if needle in hay:
                found.append(f"{who}:{form}")
    return found


def test_the_check_finds_a_key_in_every_form() -> None:
    key = Ed25519PrivateKey.from_private_bytes(bytes(range(7, 39)))
    other = Ed25519PrivateKey.from_private_bytes(bytes(range(100, 132)))
    keys = {"gateway": key, "operator": other}
    assert leaks("INFO edge_agent start key_fp=ab12", keys) == []
    for form, needle in secret_forms(key).items():
        line = f"DEBUG edge_agent.trust loaded key={needle} from=/etc/edge-agent/signing.key"
        found = leaks(line, keys)
        assert f"gateway:{form}" in found and not any(f.startswith("operator") for f in found)
    assert leaks(private_pem(other).decode(), keys) == ["operator:pem_body"]


def wait(pred: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return bool(pred())  # type: ignore[operator]


@pytest.mark.timeout(120)
def test_agent_log_holds_no_key(gateway: Gateway) -> None:
    gw = gateway
    data = Subscriber(gw.broker.port, f"edge/{GW}/data")
    results = Subscriber(gw.broker.port, f"edge/{GW}/cmd/res")
    try:
        assert wait(lambda: len(data.payloads()) >= 5, 45), gw.log_text()[-2000:]
        now = int(time.time())
        cmd = Command(os.urandom(16), now, now + 120, 1, GW, Action.WRITE, "lamp-01",
                      "dimming", 40)  # fmt: skip
        signed = sign1(encode_command(cmd), gw.operator, kid_of(gw.operator.public_key()))
        results.client.publish(f"edge/{GW}/cmd", signed, qos=1).wait_for_publish(5)
        assert wait(lambda: len(results.payloads()) >= 1, 20), gw.log_text()[-2000:]
        gkeys = {kid_of(gw.gateway_key.public_key()): gw.gateway_key.public_key()}
        assert decode_result(verify1(results.payloads()[0], gkeys)[1]).ok
        w = gw.cli("write", "lamp-02", "dimming", "30", "--yes")
        assert w.returncode == 0, w.stderr
        gw.proc.send_signal(signal.SIGTERM)
        assert gw.proc.wait(20) == 0, gw.log_text()[-2000:]
    finally:
        data.close()
        results.close()

    log = gw.log_text()
    # the log really is a debug log of that whole life, so an absent key means something
    assert " DEBUG " in log, log[-2000:]  # the agent's few debug lines are for faults only
    events = ("agent_started", "uplink_connected", "command_audit", "local_write_audit",
              "agent_stopped")  # fmt: skip
    for event in events:
        assert event in log, (event, log[-2000:])
    on_disk = (gw.dir / "signing.key").read_bytes()
    assert private_pem(gw.gateway_key) == on_disk or gw.gateway_key.private_bytes_raw() == on_disk
    found = leaks(log, {"gateway": gw.gateway_key, "operator": gw.operator})
    assert found == [], found
