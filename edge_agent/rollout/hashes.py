"""The configuration hashes a gateway reports in its status (``config show``, the retained
status): of a configuration and its profiles (``content_hash``, the bundle's own hash for a
bundle) and of one profile. Apart from rollout/bundle.py so that a daemon which never received a
bundle does not hold the bundle's code to describe its local configuration (issue #15's memory).
"""

from __future__ import annotations

import hashlib

import cbor2


def content_hash(config: str, profiles: dict[str, str]) -> bytes:
    """SHA-256 over the canonical CBOR of [config text, {profile name: text}]."""
    return hashlib.sha256(cbor2.dumps([config, profiles], canonical=True)).digest()


def profile_hash(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()
