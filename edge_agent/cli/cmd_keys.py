"""`edge-agent keys`: generate a gateway signing key, show a key's kid and fingerprint."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edge_agent.errors import KeyFileError
from edge_agent.trust.ed25519 import PublicKey
from edge_agent.trust.keys import (
    fingerprint,
    generate_signing_key,
    kid_of,
    load_public_key,
    load_signing_key,
    public_pem,
)


def _describe(path: Path, pub: PublicKey) -> str:
    return f"key={path} kid={kid_of(pub).hex()} fingerprint={fingerprint(pub)}"


def _write_public(path: Path, pem: bytes) -> None:
    if path.exists():
        raise KeyFileError(f"{path}: already exists; refusing to overwrite")
    path.write_bytes(pem)


def _generate(args: argparse.Namespace) -> int:
    path: Path = args.path
    try:
        key = generate_signing_key(path, force=args.force)
        pub = key.public_key()
        if args.public is not None:
            _write_public(args.public, public_pem(pub))
    except KeyFileError as exc:
        print(f"edge-agent keys generate: {exc}", file=sys.stderr)
        return 1
    print(_describe(path, pub))
    if args.public is not None:
        print(f"public={args.public}")
    return 0


def _show(args: argparse.Namespace) -> int:
    path: Path = args.path
    try:
        head = path.read_bytes()[:4096] if path.is_file() else b""
    except OSError:
        head = b""
    try:
        if b"PUBLIC KEY" in head:
            pub = load_public_key(path)
        else:
            pub = load_signing_key(path).public_key()
    except KeyFileError as exc:
        print(f"edge-agent keys show: {exc}", file=sys.stderr)
        return 1
    print(_describe(path, pub))
    if args.pem:
        sys.stdout.write(public_pem(pub).decode("ascii"))
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("keys", help="generate / inspect Ed25519 signing keys")
    ksub = p.add_subparsers(dest="keys_command", metavar="ACTION", required=True)

    g = ksub.add_parser("generate", help="create a new signing key (PEM PKCS#8, mode 0600)")
    g.add_argument("path", type=Path, help="where to write the private key")
    g.add_argument("--force", action="store_true", help="replace an existing key file")
    g.add_argument(
        "--public", type=Path, metavar="PUB.pem", help="also write the public key (PEM) here"
    )
    g.set_defaults(func=_generate)

    s = ksub.add_parser("show", help="print kid and fingerprint of a private or public key")
    s.add_argument("path", type=Path, help="private key (must be 0600) or public key PEM")
    s.add_argument("--pem", action="store_true", help="also print the public key PEM")
    s.set_defaults(func=_show)
