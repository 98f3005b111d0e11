"""Real-mosquitto helpers for tests: a broker per test, a paho subscriber, a throwaway CA.

The broker runs ``/usr/sbin/mosquitto -c <conf>`` on a free loopback port; ``stop()`` kills and
reaps it. ``Subscriber`` is a paho client (its own network thread) collecting every message on a
topic filter; ``close()`` stops the thread. ``make_tls`` writes a CA, a server certificate for
localhost/127.0.0.1 and, optionally, a client certificate, all made with ``cryptography``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.errors import UplinkError
from simulators.loopback import free_port, mosquitto_path, wait_port

MOSQUITTO = mosquitto_path() or "/usr/sbin/mosquitto"






@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
    san: bool,
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = dt.datetime.now(dt.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        b = b.add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        ).add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )  # fmt: skip
    else:
        b = b.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    if san:
        b = b.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return b.sign(issuer_key, hashes.SHA256())


def make_tls(directory: Path, name: str = "ca") -> TlsFiles:
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _cert(f"test {name}", ca_key, None, ca_key, ca=True, san=False)
    srv_key = ec.generate_private_key(ec.SECP256R1())
    srv_cert = _cert("localhost", srv_key, ca_cert.subject, ca_key, ca=False, san=True)
    cli_key = ec.generate_private_key(ec.SECP256R1())
    cli_cert = _cert("gateway", cli_key, ca_cert.subject, ca_key, ca=False, san=False)
    files = TlsFiles(
        ca=directory / f"{name}.crt",
        server_cert=directory / f"{name}-server.crt",
        server_key=directory / f"{name}-server.key",
        client_cert=directory / f"{name}-client.crt",
        client_key=directory / f"{name}-client.key",
    )
    pem = serialization.Encoding.PEM
    files.ca.write_bytes(ca_cert.public_bytes(pem))
    files.server_cert.write_bytes(srv_cert.public_bytes(pem))
    files.server_key.write_bytes(_key_pem(srv_key))
    files.client_cert.write_bytes(cli_cert.public_bytes(pem))
    files.client_key.write_bytes(_key_pem(cli_key))
    for p in (files.server_key, files.client_key):
        os.chmod(p, 0o600)
    return files


class Mosquitto:
    """One mosquitto process on ``port`` (plain listener, or TLS when ``tls`` is given)."""

    def __init__(
        self,
        directory: Path,
        *,
        port: int | None = None,
        tls: TlsFiles | None = None,
        require_client_cert: bool = False,
        persistence: bool = False,
        passwords: dict[str, str] | None = None,
        acl: str | None = None,
    ) -> None:
        """With ``tls``, ``port`` is the TLS listener and ``plain_port`` a plaintext one for test
        subscribers. With ``passwords`` (user -> password) anonymous clients are refused on the
        main listener. ``acl``: a mosquitto acl_file's text for the main listener."""
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)

        self.port = port or free_port()
        self.tls = tls
        self.conf = self.dir / "mosquitto.conf"
        self.plain_port = self.port
        lines = ["per_listener_settings true", f"listener {self.port} 127.0.0.1"]
        if passwords:
            pw = self.dir / "passwd"
            pw.write_text("".join(f"{u}:{p}\n" for u, p in passwords.items()))
            subprocess.run(["mosquitto_passwd", "-U", str(pw)], check=True)
            lines += ["allow_anonymous false", f"password_file {pw}"]
        else:
            lines.append("allow_anonymous true")
        if tls is not None:
            lines += [
                f"cafile {tls.ca}",
                f"certfile {tls.server_cert}",
                f"keyfile {tls.server_key}",
                f"require_certificate {'true' if require_client_cert else 'false'}",
            ]
        if acl is not None:
            (self.dir / "acl").write_text(acl)
            lines.append(f"acl_file {self.dir / 'acl'}")
        if tls is not None or passwords:
            self.plain_port = free_port()
            lines += [f"listener {self.plain_port} 127.0.0.1", "allow_anonymous true"]
        lines += [
            f"persistence {'true' if persistence else 'false'}",
            f"persistence_location {self.dir}/",
            "max_inflight_messages 0",
            "max_queued_messages 0",
            # started as root, mosquitto would drop to user "mosquitto", which cannot write its
            # database under pytest's private tmp dirs: keep the invoking user
            *(["user root"] if os.geteuid() == 0 else []),
            "log_dest stderr",
            "log_type error",
            "log_type warning",
        ]
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.dir / "mosquitto.log"

    def start(self) -> None:
        assert self.proc is None
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [MOSQUITTO, "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT
            )
        try:
            wait_port(self.port)
            wait_port(self.plain_port)
        except UplinkError:
            self.stop()
            raise RuntimeError(f"mosquitto did not start: {self.log.read_text()[-2000:]}") from None

    def stop(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(sig)
            self.proc.wait(10)
            self.proc = None

    def restart(self, sig: int = signal.SIGTERM) -> None:
        self.stop(sig)
        self.start()


class Subscriber:
    """Collects every (topic, payload, retain) on ``topic`` with QoS 1 (own paho thread)."""

    def __init__(
        self, port: int, topic: str, *, client_id: str = "", persistent: bool = False
    ) -> None:
        self.topic = topic
        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"sub-{os.getpid()}-{id(self)}",
            clean_session=not persistent,
        )
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda c, u, mid, rc, p: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.1, 0.5)  # type: ignore[arg-type]
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        if not self.subscribed.wait(10):
            self.close()
            raise TimeoutError("subscriber got no SUBACK")

    def _on_connect(self, c: paho.Client, u: Any, f: Any, rc: Any, p: Any) -> None:
        c.subscribe(self.topic, qos=1)

    def _on_message(self, c: paho.Client, u: Any, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def payloads(self, topic: str | None = None) -> list[bytes]:
        with self._lock:
            return [p for t, p, _ in self.messages if topic is None or t == topic]

    def wait_for(self, pred: Any, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                return True
            time.sleep(0.02)
        return bool(pred())

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
