from __future__ import annotations

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

from edge_agent.cli.main import main
from edge_agent.trust.batch import BatchSigner, SignedBatch
from edge_agent.trust.keys import public_pem
from tests.support_broker import Mosquitto, make_tls
from tests.trust.helpers import BOOT, GATEWAY, build_chain, fixed_key

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def pub_file(tmp_path: Path) -> Path:
    path = tmp_path / "gw.pub.pem"
    path.write_bytes(public_pem(fixed_key(0)))
    return path


def _write_dir(root: Path, batches: list[SignedBatch]) -> Path:
    d = root / "in" / GATEWAY
    d.mkdir(parents=True)
    for b in batches:
        (d / f"{b.seq}.cose").write_bytes(b.cose)
    return root / "in"


def _json(out: str) -> dict[str, object]:
    doc = json.loads(out)
    assert isinstance(doc, dict)
    return doc


def test_verify_dir_ok_and_save(
    tmp_path: Path, pub_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    chain = build_chain(
        BatchSigner(fixed_key(0), GATEWAY, BOOT), 12
    )  # seqs 1..12: 10 < 9 lexically
    src = _write_dir(tmp_path, chain)
    save = tmp_path / "saved"
    rc = main(["verify", "--key", str(pub_file), "--dir", str(src), "--json", "--save", str(save)])
    doc = _json(capsys.readouterr().out)
    assert rc == 0 and doc["ok"] is True
    assert (doc["batches"], doc["readings"], doc["links_checked"]) == (12, 48, 12)
    for b in chain:
        assert (save / GATEWAY / f"{b.seq}.cose").read_bytes() == b.cose
    assert main(["verify", "--key", f"{GATEWAY}={pub_file}", "--dir", str(src)]) == 0
    text = capsys.readouterr().out
    assert "batches=12" in text and "result=OK" in text
    assert main(["verify", "--key", f"gw-other={pub_file}", "--dir", str(src)]) == 1
    assert "forged=12" in capsys.readouterr().out


def test_verify_dir_failures(
    tmp_path: Path, pub_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    chain = build_chain(BatchSigner(fixed_key(0), GATEWAY, BOOT), 6)
    src = _write_dir(tmp_path, chain)
    (src / GATEWAY / "3.cose").unlink()
    tampered = bytearray(chain[4].cose)
    tampered[-1] ^= 1
    (src / GATEWAY / "5.cose").write_bytes(bytes(tampered))
    rc = main(["verify", "--key", str(pub_file), "--dir", str(src)])
    out = capsys.readouterr().out
    assert rc == 1 and "result=FAILED" in out
    assert "forged=1" in out and "gaps_unexplained=2" in out
    assert "bad signature" in out and "seqs=3..3" in out and "seqs=5..5" in out


def test_verify_usage_errors(
    tmp_path: Path, pub_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["verify", "--key", str(tmp_path / "nope.pem"), "--dir", str(tmp_path)]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["verify", "--key", str(pub_file), "--dir", str(tmp_path / "missing")]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert main(["verify", "--key", str(pub_file), "--broker", "no-port"]) == 2
    assert "HOST:PORT" in capsys.readouterr().err


def _wait_for_line(proc: subprocess.Popen[bytes], needle: bytes, timeout: float) -> bytes:
    assert proc.stderr is not None
    fd = proc.stderr.fileno()
    seen = b""
    deadline = time.monotonic() + timeout
    while needle not in seen:
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None:
            raise AssertionError(f"no {needle!r} from verify; stderr so far: {seen!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            seen += os.read(fd, 4096)
    return seen


def _publish(port: int, topic: str, payloads: list[bytes], ca: Path | None = None) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-pub")
    if ca is not None:
        client.tls_set(ca_certs=str(ca))
    client.connect("localhost" if ca else "127.0.0.1", port)
    client.loop_start()
    try:
        for p in payloads:
            client.publish(topic, p, qos=1).wait_for_publish(timeout=5)
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("topic", ["edge/+/data", "$share/grp/edge/+/data"])
def test_verify_broker_live(mosquitto: int, tmp_path: Path, pub_file: Path, topic: str) -> None:
    chain = build_chain(BatchSigner(fixed_key(0), GATEWAY, BOOT), 8)
    msgs = [b.cose for b in chain if b.seq != 4] + [chain[1].cose]  # seq 4 lost, seq 2 twice
    save = tmp_path / "saved"
    cmd = [
        sys.executable, "-m", "edge_agent.cli.main", "verify", "--key", str(pub_file),
        "--broker", f"127.0.0.1:{mosquitto}", "--topic", topic, "--count", str(len(msgs)),
        "--duration", "20", "--json", "--save", str(save),
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ}
    )
    try:
        _wait_for_line(proc, b"subscribed", timeout=15)
        _publish(mosquitto, f"edge/{GATEWAY}/data", msgs)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1, err
    doc = _json(out.decode())
    assert doc["ok"] is False
    assert (doc["batches"], doc["duplicates"], doc["gaps_unexplained"]) == (7, 1, 1)
    assert doc["unexplained"] == [[GATEWAY, 4, 4]]
    assert sorted(int(p.stem) for p in (save / GATEWAY).iterdir()) == [1, 2, 3, 5, 6, 7, 8]


@pytest.mark.timeout(40)
def test_verify_broker_tls(tmp_path: Path, pub_file: Path) -> None:
    tls = make_tls(tmp_path / "tls")
    broker = Mosquitto(tmp_path / "broker", tls=tls)
    broker.start()
    try:
        chain = build_chain(BatchSigner(fixed_key(0), GATEWAY, BOOT), 3)
        cmd = [
            sys.executable, "-m", "edge_agent.cli.main", "verify", "--key", str(pub_file),
            "--broker", f"localhost:{broker.port}", "--tls-ca", str(tls.ca), "--count", "3",
            "--duration", "20",
        ]  # fmt: skip
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            _wait_for_line(proc, b"subscribed", timeout=15)
            _publish(broker.port, f"edge/{GATEWAY}/data", [b.cose for b in chain], ca=tls.ca)
            out, err = proc.communicate(timeout=15)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert proc.returncode == 0, err
        assert b"batches=3" in out and b"result=OK" in out
    finally:
        broker.stop()
