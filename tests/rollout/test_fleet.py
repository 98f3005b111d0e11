"""A simulated fleet on one mosquitto -- four gateways, each the real daemon in its own process,
kept running as the unit keeps it -- driven by the operator's real CLI: `config sign`, `fleet
rollout`, `fleet status`, `config send`, and the technician's `config pin`."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edge_agent.trust.keys import kid_of, load_signing_key, public_pem

from .fleet import EXIT_RESTART, Fleet, run_cli

HARBOUR = ["gw-a", "gw-b", "gw-c"]


def wait(pred: Callable[[], object], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.3)
    return bool(pred())


def all_up(f: Fleet) -> bool:
    st = f.status()
    return len(st) == len(f.gateways) and all(
        s.get("devices", {}).get("up") == s.get("devices", {}).get("total") == 4
        for s in st.values())


def send(f: Fleet, bundle: Path, gw: str) -> dict[str, Any]:
    done = run_cli("config", "send", str(bundle), "--broker", f.broker_addr, "--gateway", gw,
                   "--gateway-key", str(f.dir / f"{gw}.pub"), "--wait", "30", "--json")
    answers = json.loads(done.stdout)
    assert answers, done.stderr
    assert all(a["verified"] for a in answers)
    return dict(answers[-1])


def rollout(f: Fleet, bundle: Path, *args: str) -> tuple[int, dict[str, Any]]:
    keys = [a for g in f.gateways for a in ("--gateway-key", str(f.dir / f"{g}.pub"))]
    done = f.fleet("rollout", str(bundle), "--json", *keys, *args)
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


@pytest.mark.timeout(600)
def test_rollout_in_waves_rollback_refusals_and_pin(fleet: Fleet) -> None:
    f = fleet
    for gateway in f.gateways.values():
        (f.dir / f"{gateway.id}.pub").write_bytes(public_pem(gateway.key))
    assert wait(lambda: all_up(f), 60), {g: s.get("devices") for g, s in f.status().items()}

    # 1. a good bundle (a restart-only change: [batch]) reaches every harbour box, canary first
    good = f.managed + "\n[batch]\nmax_readings = 20\nmax_ms = 300\n"
    b1 = f.sign(1, good, "--tag", "district=harbour", "--probation", "6")
    code, out = rollout(f, b1, "--wave-size", "2")
    gws = out["gateways"]
    assert code == 0 and out["complete"], out
    assert sorted(gws) == HARBOUR  # gw-x (district=north) is not addressed
    assert gws["gw-a"]["wave"] == 1 and {gws["gw-b"]["wave"], gws["gw-c"]["wave"]} == {2}
    assert all(gws[g]["outcome"] == "committed" and gws[g]["verified"] for g in HARBOUR)
    for g in HARBOUR:  # the batch change needed the controlled restart, and got it
        assert EXIT_RESTART in f.gateways[g].proc.exits, f.gateways[g].log_text()[-2000:]
    st = f.status()
    assert {st[g]["config"]["version"] for g in HARBOUR} == {1}
    assert len({st[g]["config"]["hash"] for g in HARBOUR}) == 1
    # gw-x (district=north) is not behind: harbour's bundle is no business of its group
    assert st["gw-x"]["config"]["version"] == 0 and "behind" not in st["gw-x"]["flags"]
    assert st["gw-a"]["config"]["addressed"] == {"selector": {"district": "harbour"}}
    assert st["gw-a"]["config"]["profiles"]["street_lamp"].startswith("sha256:")
    assert st["gw-a"]["tags"] == {"district": "harbour", "wave": "canary"}
    assert {"clock", "devices", "outbox_depth", "version"} <= set(st["gw-a"])
    assert wait(lambda: all_up(f), 30)

    # 2. lamps pointed at unit ids nobody answers: rolled back on the canary, the wave stops
    bad = good.replace("unit_id = 1\n", "unit_id = 9\n")
    assert bad != good
    b2 = f.sign(2, bad, "--tag", "district=harbour", "--probation", "6")
    code, out = rollout(f, b2, "--wave-size", "2")
    gws = out["gateways"]
    assert code == 1 and "gw-a rolled back (devices_worse)" in str(out["stopped"]), out
    assert gws["gw-a"]["outcome"] == "rolled_back" and gws["gw-a"]["reason"] == "devices_worse"
    ev = gws["gw-a"]["evidence"]
    assert ev["before_up"] == 4 and ev["down"] >= 2 and ev["failing"], ev
    assert gws["gw-b"]["outcome"] == gws["gw-c"]["outcome"] == "not_sent"
    a = f.gateways["gw-a"]
    assert wait(lambda: {d["unit_id"] for d in a.call("devices")} == {1, 2}, 20)  # back on v1
    st = f.status()
    assert st["gw-a"]["config"]["version"] == 1 and "rolled_back" in st["gw-a"]["flags"]
    assert st["gw-a"]["config"]["last_rollout"]["version"] == 2
    assert st["gw-b"]["config"]["version"] == 1

    # 3. refused and audited: a replayed version, a command key, a tampered bundle
    r = send(f, b2, "gw-a")  # version 2 again: already passed (rolled back)
    assert (r["state"], r["reason"]) == ("refused", "version_passed")
    good3 = good.replace("max_readings = 20", "max_readings = 25")
    wrong = f.sign(3, good3, "--gateway", "gw-b", key=f.command_op, name="wrong-role.cose")
    r = send(f, wrong, "gw-b")
    assert (r["state"], r["reason"]) == ("refused", "wrong_role")
    b3 = f.sign(3, good3, "--tag", "district=harbour", "--probation", "5")
    tampered = bytearray(b3.read_bytes())
    i = tampered.index(b"max_readings = 25")
    tampered[i + 15:i + 17] = b"99"
    (f.dir / "tampered.cose").write_bytes(bytes(tampered))
    r = send(f, f.dir / "tampered.cose", "gw-b")
    assert (r["state"], r["reason"]) == ("refused", "bad_signature")
    log_b = f.gateways["gw-b"].log_text()
    command_kid = kid_of(load_signing_key(f.command_op).public_key()).hex()
    assert f"kid={command_kid} state=refused reason=wrong_role" in log_b  # the key is named
    assert "reason=bad_signature" in log_b
    assert "state=refused reason=version_passed" in f.gateways["gw-a"].log_text()

    # 4. a technician pins gw-c: it declines, the others take version 3
    pin = f.gateways["gw-c"].cli("config", "pin", "--reason", "lamp replacement")
    assert pin.returncode == 0, pin.stderr
    code, out = rollout(f, b3, "--wave-size", "5")
    gws = out["gateways"]
    assert gws["gw-a"]["outcome"] == gws["gw-b"]["outcome"] == "committed", out
    assert gws["gw-c"]["outcome"] == "pinned" and "lamp replacement" in gws["gw-c"]["reason"]
    assert code == 1 and not out["complete"] and not out["stopped"]
    st = f.status()
    assert st["gw-c"]["config"]["pinned"] is True and "pinned" in st["gw-c"]["flags"]
    assert "behind" in st["gw-c"]["flags"] and st["gw-c"]["config"]["source"] == "local"
    assert st["gw-c"]["config"]["pin_reason"] == "lamp replacement"
    text = run_cli("fleet", "status", "--broker", f.broker_addr, "--wait", "1.5")
    assert "pinned (lamp replacement)" in text.stdout, text.stdout
    r = send(f, b1, "gw-b")  # an older version replayed at a box that moved on
    assert (r["state"], r["reason"]) == ("refused", "version_passed")
    unpin = f.gateways["gw-c"].cli("config", "unpin", "--json")
    assert unpin.returncode == 0, unpin.stderr
    assert json.loads(unpin.stdout.split("\n", 1)[1] if not unpin.stdout.startswith("{")
                      else unpin.stdout)["version"] == 1  # the last good bundle again
    st = f.status()  # gw-c runs version 1 again, its group version 3: behind; gw-x is not
    assert "behind" in st["gw-c"]["flags"] and "behind" not in st["gw-x"]["flags"], st
