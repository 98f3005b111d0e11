"""Shared pieces of the rollout tests: a managed config, bundles signed the way `config sign`
signs them, a local agent.toml for a box."""

from __future__ import annotations

import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.profiles.shipped import shipped_dir
from edge_agent.rollout.bundle import Bundle, encode_bundle
from edge_agent.rollout.effective import referenced_profiles
from edge_agent.trust.cose import sign1
from edge_agent.trust.keys import kid_of


def managed(port: int = 1502, unit_id: int = 1, extra: str = "") -> str:
    return (f'[[buses]]\nname = "pole-1"\nkind = "tcp"\nhost = "127.0.0.1"\nport = {port}\n\n'
            f'[[devices]]\nname = "lamp-01"\nprofile = "street_lamp"\nbus = "pole-1"\n'
            f"unit_id = {unit_id}\n{extra}")


def bundle(version: int, config: str | None = None, *, targets: tuple[str, ...] = ("gw-a",),
           selector: dict[str, str] | None = None, nbf: int | None = None, ttl: int = 3600,
           window_s: int = 5, ratio: float = 0.9) -> Bundle:
    text = managed() if config is None else config
    now = int(time.time()) if nbf is None else nbf
    return Bundle(version, now, now, now + ttl, text,
                  referenced_profiles(text, shipped_dir(), "managed.toml"),
                  () if selector else targets, selector or {}, window_s, ratio)


def signed(b: Bundle, key: Ed25519PrivateKey) -> bytes:
    return sign1(encode_bundle(b), key, kid_of(key.public_key()))


def local_config(d: Path, gateway_id: str = "gw-a", extra: str = "") -> Path:
    """A box's own agent.toml (with its managed part too: the configuration of last resort)."""
    from edge_agent.trust.keys import generate_signing_key

    d.mkdir(parents=True, exist_ok=True)
    if not (d / "signing.key").exists():
        generate_signing_key(d / "signing.key")
    p = d / "agent.toml"
    p.write_text(f'gateway_id = "{gateway_id}"\nstate_dir = "state"\nruntime_dir = "run"\n\n'
                 f'[keys]\nsigning_key = "signing.key"\n\n[rollout]\ntags = {{ district = '
                 f'"harbour" }}\n\n{extra}' + managed())
    return p
