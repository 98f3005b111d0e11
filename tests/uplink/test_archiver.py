"""`edge-agent verify --broker --state --save` as an archiver, against a real mosquitto with
persistence: the real uplink publishes while the broker restarts five times and the archiver is
killed with -9 twice; the archive ends up with every batch exactly once, byte for byte, and the
report (covering every run) is OK. Conflicts — however old — are reported and kept as evidence
beside the first copy, never replacing it."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.outbox.store import Outbox
from edge_agent.trust.batch import BatchSigner, ChainHead, SignedBatch
from edge_agent.trust.keys import public_pem
from simulators.synthetic import synthetic_readings
from tests.outbox.chains import GATEWAY
from tests.support_broker import Mosquitto
from tests.uplink.conftest import MakeUplink
from tests.uplink.streams import append_batches

REPO = Path(__file__).resolve().parents[2]
N = 300


class Archiver:
    def __init__(self, tmp: Path, port: int, key: Ed25519PrivateKey) -> None:
        pub = tmp / "gw.pub.pem"
        pub.write_bytes(public_pem(key))
        self.state, self.save, self.log = tmp / "archive.db", tmp / "saved", tmp / "archiver.log"
        self.cmd = [
            sys.executable, "-m", "edge_agent.cli.main", "verify", "--key", str(pub),
            "--broker", f"127.0.0.1:{port}", "--state", str(self.state), "--save",
            str(self.save), "--json",
        ]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    def run(self) -> None:
        """Start a run; back once it subscribed (its stderr says so)."""
        self.runs += 1
        log = self.log.with_name(f"archiver-{self.runs}.log")
        with open(log, "wb") as err:
            self.proc = subprocess.Popen(self.cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=err)
        deadline = time.monotonic() + 20
        while b"subscribed" not in log.read_bytes():
            assert time.monotonic() < deadline and self.proc.poll() is None, log.read_text()
            time.sleep(0.05)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.communicate(timeout=10)
        self.proc = None

    def stop(self) -> tuple[int, dict[str, object]]:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=30)
        rc, self.proc = self.proc.returncode, None
        return rc, json.loads(out)

    def seen(self) -> int:
        if not self.state.exists():
            return 0
        db = sqlite3.connect(f"file:{self.state}?mode=ro", uri=True)
        try:
            return int(db.execute("SELECT count(*) FROM seen").fetchone()[0])
        except sqlite3.OperationalError:
            return 0
        finally:
            db.close()

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


@pytest.mark.timeout(180)
def test_archiver_loses_nothing_across_broker_restarts_and_its_own_kill9(
    tmp_path: Path, outbox: Outbox, signer: BatchSigner, key: Ed25519PrivateKey,
    make_uplink: MakeUplink,
) -> None:  # fmt: skip
    broker = Mosquitto(tmp_path / "broker", persistence=True)
    broker.start()
    arch = Archiver(tmp_path, broker.port, key)
    try:
        arch.run()
        up = make_uplink(broker.port, box=outbox)
        signed: list[SignedBatch] = []
        t = threading.Thread(
            target=lambda: signed.extend(append_batches(signer, outbox, N, 20, 0.02))
        )
        t.start()
        try:
            for i in range(5):
                time.sleep(0.8)
                broker.restart(signal.SIGTERM)  # sessions and queued batches saved and reloaded
                if i in (1, 3):
                    time.sleep(0.3)
                    arch.kill9()  # unacknowledged batches come again on the next run
                    arch.run()
        finally:
            t.join()
        assert up.wait_drained(30)
        deadline = time.monotonic() + 30
        while arch.seen() < N and time.monotonic() < deadline:
            time.sleep(0.2)
        rc, rep = arch.stop()
    finally:
        arch.close()
        broker.stop()
    assert rc == 0 and rep["ok"] is True, rep
    assert (rep["batches"], rep["gaps_unexplained"], rep["conflicts"], rep["forged"]) == (
        N, 0, 0, 0)  # fmt: skip
    files = sorted((arch.save / GATEWAY).iterdir(), key=lambda p: int(p.name.split(".")[0]))
    assert [p.name for p in files] == [f"{s}.cose" for s in range(1, N + 1)]
    assert [p.read_bytes() for p in files] == [b.cose for b in signed]


def _publish(port: int, payloads: list[bytes]) -> None:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{os.getpid()}")
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        for p in payloads:
            c.publish(f"edge/{GATEWAY}/data", p, qos=1).wait_for_publish(timeout=5)
    finally:
        c.disconnect()
        c.loop_stop()


@pytest.mark.timeout(90)
def test_conflicts_are_reported_and_kept_beside_the_first_copy(
    tmp_path: Path, signer: BatchSigner, key: Ed25519PrivateKey
) -> None:
    chain = []
    head = ChainHead.genesis()
    for i in range(12):
        b = signer.sign_readings(head, list(synthetic_readings(5, start=i * 5)), created_ns=i,
                                 clock_synced=True)  # fmt: skip
        chain.append(b)
        head = BatchSigner.next_head(b)
    twin3 = signer.sign_readings(ChainHead(2, chain[1].digest), list(synthetic_readings(1)),
                                 created_ns=99, clock_synced=True)  # fmt: skip
    twin1 = signer.sign_readings(ChainHead.genesis(), [], created_ns=98, clock_synced=True)
    broker = Mosquitto(tmp_path / "broker", persistence=True)
    broker.start()
    arch = Archiver(tmp_path, broker.port, key)
    try:
        arch.run()
        _publish(broker.port, [b.cose for b in chain] + [twin3.cose, chain[4].cose])
        deadline = time.monotonic() + 15
        while arch.seen() < 12 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        rc, first = arch.stop()
        assert rc == 1 and (first["conflicts"], first["duplicates"], first["batches"]) == (1, 1, 12)
        arch.run()  # a later run still knows seq 1's first copy
        _publish(broker.port, [twin1.cose])
        time.sleep(1.0)
        rc, second = arch.stop()
    finally:
        arch.close()
        broker.stop()
    assert rc == 1 and (second["conflicts"], second["batches"]) == (2, 12), second
    problems = second["problems"]
    assert isinstance(problems, list) and any("seq=1:" in p for p in problems)
    d = arch.save / GATEWAY
    assert (d / "3.cose").read_bytes() == chain[2].cose  # the first copy stays
    assert (d / "1.cose").read_bytes() == chain[0].cose
    evidence = sorted(p.name for p in d.iterdir() if "conflict" in p.name)
    assert len(evidence) == 2 and evidence[0].startswith("1.conflict-")
    assert [p.read_bytes() for p in sorted(d.glob("3.conflict-*"))] == [twin3.cose]
    # the archive read back tells the same story
    out = subprocess.run(
        [sys.executable, "-m", "edge_agent.cli.main", "verify", "--key",
         str(tmp_path / "gw.pub.pem"), "--dir", str(arch.save), "--json"],
        cwd=REPO, capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    again = json.loads(out.stdout)
    assert out.returncode == 1 and (again["conflicts"], again["batches"]) == (2, 12)


@pytest.mark.timeout(60)
def test_a_second_archiver_on_the_same_state_exits_at_once_naming_the_first(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    """Two archivers on one state took the MQTT session from each other (the client id is kept
    in the state) and called each other's batches unexplained gaps: the second now exits before
    it connects or touches --save, with one line naming the holder's pid; the first goes on."""
    broker = Mosquitto(tmp_path / "broker", persistence=True)
    broker.start()
    arch = Archiver(tmp_path, broker.port, key)
    try:
        arch.run()
        assert arch.proc is not None
        t0 = time.monotonic()
        second = subprocess.run(arch.cmd, cwd=REPO, capture_output=True, text=True, timeout=30,
                                check=False)
        assert time.monotonic() - t0 < 10
        assert second.returncode == 2 and second.stdout == "", second
        lines = second.stderr.strip().splitlines()
        assert lines == [f"edge-agent verify: {arch.state}: in use by another edge-agent verify "
                         f"(pid {arch.proc.pid}); one archiver per state file"], second.stderr
        rc, rep = arch.stop()
        assert rc == 0 and rep["ok"] is True, rep
        arch.run()  # and once it has stopped, the state is free again
        rc, _ = arch.stop()
        assert rc == 0
    finally:
        arch.close()
        broker.stop()
