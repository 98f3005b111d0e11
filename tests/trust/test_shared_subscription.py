"""Several `edge-agent verify` processes split a fleet through an MQTT shared subscription.

Two verifiers subscribe to ``$share/grp/edge/+/data`` on a real mosquitto; a publisher sends the
hash-chained batches of three gateways. mosquitto hands every message to exactly one member of the
group, so together the verifiers see every batch once, each sees a part, and each reports the seqs
the other one took as unexplained gaps in its half of the chains.
"""

from __future__ import annotations

import itertools
import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.trust.batch import BatchSigner
from edge_agent.trust.keys import public_pem
from tests.trust.helpers import BOOT, build_chain, fixed_key

REPO = Path(__file__).resolve().parents[2]
GATEWAYS = ("gw-north", "gw-south", "gw-east")
BATCHES = 12  # per gateway
TOPIC = "$share/grp/edge/+/data"
LISTEN_S = 8.0


def _wait_subscribed(proc: subprocess.Popen[bytes], timeout: float) -> None:
    assert proc.stderr is not None
    fd = proc.stderr.fileno()
    seen = b""
    deadline = time.monotonic() + timeout
    while b"subscribed" not in seen:
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None:
            raise AssertionError(f"verify did not subscribe; stderr so far: {seen!r}")
        if select.select([fd], [], [], left)[0]:
            seen += os.read(fd, 4096)


def _publish(port: int, messages: list[tuple[str, bytes]]) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-fleet-pub")
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        for topic, payload in messages:
            client.publish(topic, payload, qos=1).wait_for_publish(timeout=5)
    finally:
        client.disconnect()
        client.loop_stop()


def _holes(seqs: list[int]) -> list[tuple[int, int]]:
    """Missing runs between the lowest and highest seq received (what a verifier can notice)."""
    out: list[tuple[int, int]] = []
    for a, b in itertools.pairwise(seqs):
        if b > a + 1:
            out.append((a + 1, b - 1))
    return out


@pytest.mark.timeout(45)
def test_two_verifiers_split_a_fleet_exactly_once(mosquitto: int, tmp_path: Path) -> None:
    key_args: list[str] = []
    messages: list[tuple[str, bytes]] = []
    chains = {}
    for n, gw in enumerate(GATEWAYS):
        pub = tmp_path / f"{gw}.pub.pem"
        pub.write_bytes(public_pem(fixed_key(n)))
        key_args += ["--key", f"{gw}={pub}"]
        chains[gw] = build_chain(BatchSigner(fixed_key(n), gw, BOOT), BATCHES)
    for i in range(BATCHES):  # the gateways' uplinks interleave on the broker
        messages += [(f"edge/{gw}/data", chains[gw][i].cose) for gw in GATEWAYS]

    procs: list[subprocess.Popen[bytes]] = []
    saves = [tmp_path / "saved-a", tmp_path / "saved-b"]
    try:
        for save in saves:
            cmd = [
                sys.executable, "-m", "edge_agent.cli.main", "verify", *key_args,
                "--broker", f"127.0.0.1:{mosquitto}", "--topic", TOPIC, "--json",
                "--duration", str(LISTEN_S), "--save", str(save),
            ]  # fmt: skip
            procs.append(
                subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            )
        for proc in procs:
            _wait_subscribed(proc, timeout=15)
        _publish(mosquitto, messages)
        results = [proc.communicate(timeout=LISTEN_S + 15) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()

    reports = [json.loads(out) for out, _ in results]
    received: list[dict[str, list[int]]] = []
    for save in saves:
        got = {
            gw: sorted(int(p.stem) for p in (save / gw).glob("*.cose"))
            for gw in GATEWAYS
            if (save / gw).is_dir()
        }
        received.append(got)

    # together: every batch of every gateway exactly once
    for gw in GATEWAYS:
        a, b = received[0].get(gw, []), received[1].get(gw, [])
        assert not set(a) & set(b), (gw, a, b)
        assert sorted(a + b) == list(range(1, BATCHES + 1)), (gw, a, b)
    assert sum(int(r["batches"]) for r in reports) == len(GATEWAYS) * BATCHES
    assert sum(int(r["readings"]) for r in reports) == len(GATEWAYS) * BATCHES * 4

    for proc, rep, got, (_, err) in zip(procs, reports, received, results, strict=True):
        total = sum(len(s) for s in got.values())
        assert 0 < total < len(GATEWAYS) * BATCHES, got  # each took a share, neither took all
        assert rep["batches"] == total
        assert (rep["duplicates"], rep["forged"], rep["conflicts"], rep["broken_chain"]) == (
            0, 0, 0, 0), rep  # fmt: skip
        assert sorted(rep["gateways"]) == sorted(got)
        # what it reports as missing is exactly what went to the other verifier, inside the span
        # of seqs it saw itself (before its first batch of a chain it cannot know anything)
        expected = sorted((gw, a, b) for gw, seqs in got.items() for a, b in _holes(seqs))
        assert sorted(tuple(u) for u in rep["unexplained"]) == expected, (rep, got)
        assert rep["gaps_unexplained"] == sum(b - a + 1 for _, a, b in expected)
        assert rep["ok"] is (not expected)
        assert proc.returncode == (1 if expected else 0), err
