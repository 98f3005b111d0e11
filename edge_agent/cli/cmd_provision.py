"""`edge-agent provision`: give a gateway its identity.

Creates the Ed25519 signing key (0600, owned by the service user when run as root), the operator
allowlist directory, and an agent.toml skeleton (never overwritten); prints the public key and its
fingerprint for enrollment in the backend. Keys are never overwritten without --force. There are no
default credentials anywhere: the skeleton has no uplink password, the key is made here.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import re
from pathlib import Path
from typing import Any

from edge_agent.cli.common import EXIT_FAIL, EXIT_OK, EXIT_USAGE, emit, fail
from edge_agent.errors import KeyFileError
from edge_agent.trust.keys import fingerprint, generate_signing_key, kid_of, public_pem

GATEWAY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

SKELETON = """\
# agent.toml for gateway {gw} — written by `edge-agent provision`; edit, then check with
#   edge-agent check-config {cfg}
# Relative paths are relative to this file. See docs/profiles.md for every key.

gateway_id = "{gw}"
{profiles}
state_dir = "{state}"
runtime_dir = "{runtime}"

# [[buses]]
# name = "rs485-1"
# kind = "rtu"
# port = "/dev/ttyUSB0"
# baud = 9600
# parity = "N"
#
# [[devices]]
# name = "meter-1"
# profile = "water_meter"
# bus = "rs485-1"
# unit_id = 1

# [uplink]
# host = "mqtt.example.city"
# port = 8883
# [uplink.tls]
# ca_file = "ca.pem"

[outbox]
path = "{state}/outbox.db"

[keys]
signing_key = "{key}"
command_keys = "{operators}"
config_keys = "{config_operators}"   # who may sign configuration bundles

# [rollout]
# tags = {{ district = "harbour" }}   # matched by a configuration bundle's tag selector
"""


def _profiles_line(profiles_dir: str | None) -> str:
    if profiles_dir is None:
        return ('# profiles_dir = "/etc/edge-agent/profiles"   '
                "# unset: the profiles shipped with edge-agent")
    return f"profiles_dir = {json.dumps(profiles_dir)}"


def _chown(path: Path, user: str | None) -> None:
    if user is None or os.geteuid() != 0:
        return
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        return
    os.chown(path, pw.pw_uid, pw.pw_gid)


def _provision(args: argparse.Namespace) -> int:
    if not GATEWAY_ID.match(args.gateway_id):
        return fail("provision: gateway id must be 1-64 of [A-Za-z0-9_.-], starting with a "
                    "letter or digit", EXIT_USAGE)
    conf_dir: Path = args.config_dir
    state: Path = args.state_dir
    key_path = state / "keys" / "signing.key"
    operators = conf_dir / "operators"
    config_operators = conf_dir / "config-operators"
    for d, mode in ((conf_dir, 0o750), (state, 0o700), (key_path.parent, 0o700),
                    (operators, 0o755), (config_operators, 0o755)):
        d.mkdir(parents=True, exist_ok=True)
        os.chmod(d, mode)
    _chown(state, args.user)
    _chown(key_path.parent, args.user)
    try:
        key = generate_signing_key(key_path, force=args.force)
    except KeyFileError as exc:
        return fail(f"provision: {exc}", EXIT_FAIL)
    _chown(key_path, args.user)
    pub_path = state / "keys" / "signing.pub"
    pub_path.write_bytes(public_pem(key))
    cfg = conf_dir / "agent.toml"
    wrote_cfg = False
    if not cfg.exists():
        cfg.write_text(SKELETON.format(
            gw=args.gateway_id, cfg=cfg, profiles=_profiles_line(args.profiles_dir), state=state,
            runtime=args.runtime_dir, key=key_path, operators=operators,
            config_operators=config_operators))
        wrote_cfg = True
    pub = key.public_key()
    info: dict[str, Any] = {
        "gateway_id": args.gateway_id, "signing_key": str(key_path), "public_key": str(pub_path),
        "kid": kid_of(pub).hex(), "fingerprint": fingerprint(pub),
        "config": str(cfg), "config_written": wrote_cfg,
        "public_pem": public_pem(pub).decode(),
    }
    emit(args, info, "\n".join([
        f"gateway {args.gateway_id} provisioned",
        f"  signing key  {key_path} (0600)",
        f"  config       {cfg}" + ("" if wrote_cfg else " (kept: already existed)"),
        f"  kid          {info['kid']}",
        f"  fingerprint  {info['fingerprint']}",
        "enrol this public key in the backend:",
        info["public_pem"].rstrip(),
        *([] if not wrote_cfg else [
            "next: add the buses and devices to the config (examples are commented in it;",
            "      edge-agent scan PORT finds the units on a line, edge-agent profile list the",
            "      profiles), set [uplink], then check it: edge-agent check-config " + str(cfg),
            "      and start the service: sudo systemctl start edge-agent"]),
    ]))
    return EXIT_OK


def register(sub: Any) -> None:
    p = sub.add_parser("provision", help="create the gateway key pair and a config skeleton")
    p.add_argument("--gateway-id", required=True)
    p.add_argument("--config-dir", type=Path, default=Path("/etc/edge-agent"))
    p.add_argument("--state-dir", type=Path, default=Path("/var/lib/edge-agent"))
    p.add_argument("--runtime-dir", type=Path, default=Path("/run/edge-agent"))
    p.add_argument("--profiles-dir",
                   help="profiles_dir for the skeleton (default: unset, the shipped profiles)")
    p.add_argument("--user", default="edge-agent", help="owner of the key (when run as root)")
    p.add_argument("--force", action="store_true", help="replace an existing key (new identity!)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_provision)
