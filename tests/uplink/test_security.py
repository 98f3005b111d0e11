"""TLS (server verification, mutual TLS) and password login against a real mosquitto."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.config.model import TlsConfig, UplinkConfig
from edge_agent.errors import UplinkError
from edge_agent.outbox.store import Outbox
from edge_agent.trust.batch import BatchSigner
from edge_agent.uplink.tls import read_password, tls_context
from tests.support_broker import Mosquitto, TlsFiles, make_tls
from tests.uplink.conftest import MakeSub, MakeUplink
from tests.uplink.streams import append_batches, check_stream


@pytest.fixture
def pki(tmp_path: Path) -> tuple[TlsFiles, TlsFiles]:
    return make_tls(tmp_path / "pki", "good"), make_tls(tmp_path / "pki", "rogue")


@pytest.fixture
def tls_broker(tmp_path: Path, pki: tuple[TlsFiles, TlsFiles]) -> Iterator[Mosquitto]:
    b = Mosquitto(tmp_path / "tls", tls=pki[0])
    b.start()
    yield b
    b.stop()


@pytest.mark.timeout(30)
def test_tls_with_verification_delivers(
    tls_broker: Mosquitto, pki: tuple[TlsFiles, TlsFiles], outbox: Outbox, signer: BatchSigner,
    key: Ed25519PrivateKey, subscribe: MakeSub, make_uplink: MakeUplink,
) -> None:  # fmt: skip
    sub = subscribe(tls_broker.plain_port)
    append_batches(signer, outbox, 20)
    up = make_uplink(tls_broker.port, host="localhost", tls=TlsConfig(ca_file=pki[0].ca))
    assert up.wait_drained(10)
    assert sub.wait_for(lambda: len(sub.payloads()) >= 20, 5)
    check_stream(key, sub.payloads(), 20)


@pytest.mark.timeout(30)
def test_wrong_ca_is_refused_and_never_falls_back(
    tls_broker: Mosquitto, pki: tuple[TlsFiles, TlsFiles], outbox: Outbox, signer: BatchSigner,
    subscribe: MakeSub, make_uplink: MakeUplink,
) -> None:  # fmt: skip
    sub = subscribe(tls_broker.plain_port)
    append_batches(signer, outbox, 5)
    up = make_uplink(tls_broker.port, host="localhost", tls=TlsConfig(ca_file=pki[1].ca))
    deadline = time.monotonic() + 10
    while up.stats.attempts < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert up.stats.attempts >= 3 and up.stats.sessions == 0
    assert "CERTIFICATE_VERIFY_FAILED" in up.stats.last_error
    assert outbox.stats().depth == 5 and sub.payloads() == []
    # the plaintext port right next to it is never tried: only the configured port was used
    assert up.stats.published == 0


@pytest.mark.timeout(30)
def test_mutual_tls_needs_the_client_certificate(
    tmp_path: Path, pki: tuple[TlsFiles, TlsFiles], outbox: Outbox, signer: BatchSigner,
    key: Ed25519PrivateKey, subscribe: MakeSub, make_uplink: MakeUplink,
) -> None:  # fmt: skip
    good = pki[0]
    b = Mosquitto(tmp_path / "mtls", tls=good, require_client_cert=True)
    b.start()
    try:
        sub = subscribe(b.plain_port)
        append_batches(signer, outbox, 5)
        anonymous = make_uplink(b.port, host="localhost", tls=TlsConfig(ca_file=good.ca))
        time.sleep(1.0)
        assert anonymous.stats.sessions == 0 and outbox.stats().depth == 5
        anonymous.stop()
        mutual = TlsConfig(ca_file=good.ca, cert_file=good.client_cert, key_file=good.client_key)
        up = make_uplink(b.port, host="localhost", tls=mutual)
        assert up.wait_drained(10)
        assert sub.wait_for(lambda: len(sub.payloads()) >= 5, 5)
        check_stream(key, sub.payloads(), 5)
    finally:
        b.stop()


@pytest.mark.timeout(30)
def test_password_login(
    tmp_path: Path, outbox: Outbox, signer: BatchSigner, key: Ed25519PrivateKey,
    subscribe: MakeSub, make_uplink: MakeUplink,
) -> None:  # fmt: skip
    b = Mosquitto(tmp_path / "auth", passwords={"gw": "s3cret"})
    b.start()
    try:
        sub = subscribe(b.plain_port)
        append_batches(signer, outbox, 4)
        wrong = tmp_path / "wrong.pw"
        wrong.write_text("nope\n")
        os.chmod(wrong, 0o600)
        bad = make_uplink(b.port, username="gw", password_file=wrong)
        time.sleep(0.8)
        assert bad.stats.sessions == 0 and "connack" in bad.stats.last_error
        bad.stop()
        right = tmp_path / "right.pw"
        right.write_text("s3cret\n")
        os.chmod(right, 0o600)
        up = make_uplink(b.port, username="gw", password_file=right)
        assert up.wait_drained(10)
        assert sub.wait_for(lambda: len(sub.payloads()) >= 4, 5)
        check_stream(key, sub.payloads(), 4)
    finally:
        b.stop()


def test_bad_security_settings_name_the_key(tmp_path: Path) -> None:
    missing = tmp_path / "nope.crt"
    with pytest.raises(UplinkError, match=r"uplink\.tls\.ca_file .*nope\.crt"):
        tls_context(TlsConfig(ca_file=missing))
    files = make_tls(tmp_path / "pki")
    with pytest.raises(UplinkError, match=r"uplink\.tls\.key_file is set"):
        tls_context(TlsConfig(ca_file=files.ca, key_file=files.client_key))
    pw = tmp_path / "pw"
    pw.write_text("x\n")
    os.chmod(pw, 0o644)
    with pytest.raises(UplinkError, match=r"password_file: .*accessible by .*chmod 600"):
        read_password(UplinkConfig(host="h", username="u", password_file=pw))
    with pytest.raises(UplinkError, match=r"set uplink\.username"):
        read_password(UplinkConfig(host="h", password_file=pw))
    os.chmod(pw, 0o600)
    assert read_password(UplinkConfig(host="h", username="u", password_file=pw)) == "x"
    ctx = tls_context(TlsConfig(ca_file=files.ca))
    assert ctx.check_hostname and ctx.verify_mode.name == "CERT_REQUIRED"
