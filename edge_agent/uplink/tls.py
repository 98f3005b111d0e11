"""Security settings of the MQTT session: the TLS context and the password file.

When ``[uplink.tls]`` is configured the broker's certificate is always verified against
``ca_file`` (chain and host name); there is no option to turn that off and no plaintext fallback.
An optional client certificate/key gives mutual TLS. The client key and the password file are
checked with the secret-file rules of ``config.permissions`` (the same ones ``check-config`` and the
daemon's config loading apply) before they are read.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from edge_agent.config.model import TlsConfig, UplinkConfig
from edge_agent.config.permissions import Kind, file_problem
from edge_agent.errors import UplinkError


class TrackingContext(ssl.SSLContext):
    """An SSLContext that remembers the last socket it wrapped. paho-mqtt does not close the socket
    when the TLS handshake fails (e.g. the broker's certificate does not verify); the uplink closes
    it through ``abandon()`` instead of leaking one descriptor per attempt."""

    last: ssl.SSLSocket | None = None

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        self.last = super().wrap_socket(*args, **kwargs)
        return self.last

    def abandon(self) -> None:
        sock, self.last = self.last, None
        if sock is not None:
            sock.close()


def tls_context(tls: TlsConfig) -> TrackingContext:
    """A verifying client context, TLS >= 1.2, trusting only ``ca_file`` (what
    ``ssl.create_default_context(cafile=...)`` builds); UplinkError naming the file on bad input."""
    ctx = TrackingContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        ctx.load_verify_locations(cafile=str(tls.ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise UplinkError(f"uplink.tls.ca_file {tls.ca_file}: cannot load CA: {exc}") from exc
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    if tls.cert_file is not None or tls.key_file is not None:
        if tls.cert_file is None:
            raise UplinkError("uplink.tls.key_file is set but uplink.tls.cert_file is not")
        if tls.key_file is not None:
            why = file_problem(tls.key_file, Kind.SECRET, "TLS client key")
            if why is not None:
                raise UplinkError(f"uplink.tls.key_file: {why}")
        try:
            ctx.load_cert_chain(
                str(tls.cert_file), None if tls.key_file is None else str(tls.key_file)
            )
        except (OSError, ssl.SSLError) as exc:
            raise UplinkError(
                f"uplink.tls.cert_file {tls.cert_file}: cannot load client cert/key: {exc}"
            ) from exc
    return ctx


def read_password(cfg: UplinkConfig) -> str | None:
    """The password from ``password_file`` (first line, no trailing newline), or None."""
    path: Path | None = cfg.password_file
    if path is None:
        return None
    if cfg.username is None:
        raise UplinkError(f"uplink.password_file {path}: set uplink.username too")
    why = file_problem(path, Kind.SECRET, "MQTT password file")
    if why is not None:
        raise UplinkError(f"uplink.password_file: {why}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UplinkError(f"uplink.password_file {path}: {exc}") from exc
    lines = text.splitlines()
    if not lines or not lines[0]:
        raise UplinkError(f"uplink.password_file {path}: empty")
    return lines[0]
