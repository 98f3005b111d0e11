"""How an operator tool logs in to the broker: one set of options for `config send`, `fleet
status|rollout` and `verify --broker`.

    --tls-ca CA.pem        verify the broker's certificate against this CA (TLS on)
    --tls-cert CERT.pem    client certificate for mutual TLS (TLS on; with --tls-key)
    --tls-key KEY.pem      its private key
    --username NAME        MQTT username; the password is read from --password-file FILE (first
                           line) or $EDGE_AGENT_MQTT_PASSWORD -- never from the command line,
                           where every user of the box could read it (ps, /proc/PID/cmdline)

A broker that refuses the login answers the CONNECT with a reason code; ``connack_failure`` turns
it into words ("not authorised", "bad user name or password").
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edge_agent.cli.common import EXIT_USAGE, CliError

if TYPE_CHECKING:
    import ssl

PASSWORD_ENV = "EDGE_AGENT_MQTT_PASSWORD"


@dataclass(frozen=True, slots=True)
class BrokerLogin:
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    username: str | None = None
    password: str | None = None

    @property
    def tls(self) -> bool:
        return bool(self.tls_ca or self.tls_cert)

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context (the broker always verified); CliError naming a file that does not
        load."""
        import ssl

        if not self.tls:
            return None
        try:
            ctx = ssl.create_default_context(cafile=self.tls_ca)
        except (OSError, ssl.SSLError) as exc:
            raise CliError(f"--tls-ca {self.tls_ca}: {getattr(exc, 'strerror', None) or exc}",
                           "give the CA certificate (PEM) that signed the broker's",
                           EXIT_USAGE, "bad_tls") from None
        if self.tls_cert:
            try:
                ctx.load_cert_chain(self.tls_cert, self.tls_key)
            except (OSError, ssl.SSLError) as exc:
                raise CliError(f"--tls-cert {self.tls_cert} / --tls-key {self.tls_key}: "
                               f"{getattr(exc, 'strerror', None) or exc}",
                               "give the client certificate and its private key (PEM)",
                               EXIT_USAGE, "bad_tls") from None
        return ctx

    def apply(self, client: Any) -> None:
        """Set TLS and the credentials on a paho client (before connect)."""
        ctx = self.ssl_context()
        if ctx is not None:
            client.tls_set_context(ctx)
        if self.username is not None:
            client.username_pw_set(self.username, self.password)


def add_login_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tls-ca", metavar="CA.pem", help="CA of the broker's certificate (TLS)")
    p.add_argument("--tls-cert", metavar="CERT.pem", help="client certificate (mutual TLS)")
    p.add_argument("--tls-key", metavar="KEY.pem", help="the client certificate's private key")
    p.add_argument("--username", metavar="NAME", help="MQTT username (password: "
                   f"--password-file or ${PASSWORD_ENV})")
    p.add_argument("--password-file", metavar="FILE",
                   help="file whose first line is the MQTT password")


def login_from_args(args: argparse.Namespace) -> BrokerLogin:
    """The login the options ask for; CliError for a password file that cannot be read or
    options that do not go together."""
    cert, key = getattr(args, "tls_cert", None), getattr(args, "tls_key", None)
    if bool(cert) != bool(key):
        raise CliError("--tls-cert and --tls-key go together", "give both (mutual TLS) or "
                       "neither", EXIT_USAGE, "bad_argument")
    username = getattr(args, "username", None)
    password = None
    pw_file = getattr(args, "password_file", None)
    if pw_file:
        if username is None:
            raise CliError("--password-file without --username", "give --username NAME",
                           EXIT_USAGE, "bad_argument")
        try:
            with open(pw_file, encoding="utf-8") as f:
                password = f.readline().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError(f"--password-file {pw_file}: {getattr(exc, 'strerror', None) or exc}",
                           "give a readable file whose first line is the password", EXIT_USAGE,
                           "not_found") from None
    elif username is not None and PASSWORD_ENV in os.environ:
        password = os.environ[PASSWORD_ENV]
    ca = getattr(args, "tls_ca", None)
    return BrokerLogin(None if ca is None else str(ca), cert, key, username, password)


def connack_failure(rc: Any) -> str:
    """Words for a refused CONNECT (paho ReasonCode, MQTT 3.1.1 or 5)."""
    name = str(getattr(rc, "getName", lambda: rc)())
    low = name.lower()
    if "authori" in low:
        return "not authorised (the broker refused this login: check --username, the password, "\
               "the client certificate, and the broker's ACL)"
    if "user name or password" in low or "username" in low:
        return "bad user name or password"
    return f"connection refused: {name}"
