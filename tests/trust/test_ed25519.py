"""The daemon's Ed25519 through the system OpenSSL (trust/ed25519.py) against cryptography's: the
same signatures, keys, PEM files and verdicts; the daemon itself imports no cryptography."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge_agent.errors import ContractError, KeyFileError
from edge_agent.trust import ed25519
from edge_agent.trust.cose import sign1, verify1
from edge_agent.trust.keys import (
    generate_signing_key,
    kid_of,
    load_public_key,
    load_signing_key,
    private_pem,
    public_pem,
)

LIB = ed25519.libcrypto()
needs_lib = pytest.mark.skipif(LIB is None, reason="no system libcrypto mapped by _ssl")


def test_this_interpreter_finds_the_system_openssl() -> None:
    # the box and CI are Debian with a dynamically linked _ssl: the lean path must be the one taken
    assert LIB is not None


@needs_lib
@pytest.mark.parametrize("seed", [bytes(32), bytes(range(32)), os.urandom(32), b"\xff" * 32])
def test_same_keys_and_signatures_as_cryptography(seed: bytes) -> None:
    assert LIB is not None
    ours = ed25519.LibcryptoPrivateKey(LIB, seed)
    ref = Ed25519PrivateKey.from_private_bytes(seed)
    assert ours.public_key().public_bytes_raw() == ref.public_key().public_bytes_raw()
    assert ours.private_bytes_raw() == seed
    for msg in (b"", b"r", os.urandom(1000), os.urandom(70_000)):
        sig = ours.sign(msg)
        assert sig == ref.sign(msg)  # Ed25519 is deterministic
        assert ed25519.verified(ours.public_key(), sig, msg)
        assert ed25519.verified(ref.public_key(), sig, msg)


@needs_lib
def test_a_wrong_signature_or_message_does_not_verify() -> None:
    assert LIB is not None
    key = ed25519.LibcryptoPrivateKey(LIB, os.urandom(32))
    other = Ed25519PrivateKey.generate()
    sig = key.sign(b"payload")
    pub = key.public_key()
    assert not ed25519.verified(pub, sig, b"payload!")
    assert not ed25519.verified(pub, bytes([sig[0] ^ 1]) + sig[1:], b"payload")
    assert not ed25519.verified(pub, sig[:63], b"payload")
    assert not ed25519.verified(pub, b"", b"payload")
    assert not ed25519.verified(pub, other.sign(b"payload"), b"payload")
    assert not ed25519.verified(other.public_key(), sig, b"payload")
    assert ed25519.verified(pub, sig, b"payload")  # nothing left in OpenSSL's error queue


def test_wrong_lengths_are_refused() -> None:
    with pytest.raises(ContractError):
        ed25519.private_from_seed(bytes(31))
    with pytest.raises(ContractError):
        ed25519.public_from_raw(bytes(33))


def test_cose_between_back_ends(tmp_path: Path) -> None:
    seed = os.urandom(32)
    ours = ed25519.private_from_seed(seed)
    ref = Ed25519PrivateKey.from_private_bytes(seed)
    kid = kid_of(ref.public_key())
    assert kid_of(ours.public_key()) == kid
    msg = sign1(b"batch", ours, kid)
    assert msg == sign1(b"batch", ref, kid)
    assert verify1(msg, {kid: ref.public_key()}) == (kid, b"batch")
    assert verify1(msg, {kid: ours.public_key()}) == (kid, b"batch")


def test_key_files_read_without_cryptography_match_it(tmp_path: Path) -> None:
    path = tmp_path / "signing.key"
    ref = generate_signing_key(path)  # written by cryptography: PEM PKCS#8
    assert private_pem(ref) == path.read_bytes()
    loaded = load_signing_key(path)
    assert loaded.private_bytes_raw() == ref.private_bytes_raw()
    assert type(loaded).__module__ == ("edge_agent.trust.ed25519" if LIB else
                                       type(ref).__module__)
    pem = ref.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    assert public_pem(loaded) == pem and public_pem(loaded.public_key()) == pem
    pub_path = tmp_path / "op.pem"
    pub_path.write_bytes(b"\r\n" + pem.replace(b"\n", b"\r\n"))  # CRLF and a leading blank line
    assert load_public_key(pub_path).public_bytes_raw() == ref.public_key().public_bytes_raw()
    assert isinstance(Ed25519PublicKey.from_public_bytes(load_public_key(pub_path)
                                                         .public_bytes_raw()), Ed25519PublicKey)


def test_other_pem_forms_still_go_to_cryptography(tmp_path: Path) -> None:
    # not the simple form (here an Ed448 algorithm id): cryptography's parser judges it, with its
    # error
    import base64

    der = bytes.fromhex("302e020100300506032b657104220420") + os.urandom(32)
    path = tmp_path / "other.key"
    path.write_bytes(b"-----BEGIN PRIVATE KEY-----\n" + base64.encodebytes(der)
                     + b"-----END PRIVATE KEY-----\n")
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match=r"other\.key"):
        load_signing_key(path)
    path.write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot base64!\n-----END PRIVATE KEY-----\n")
    with pytest.raises(KeyFileError, match="not a PEM PKCS#8 private key"):
        load_signing_key(path)


def test_the_daemon_imports_no_cryptography(tmp_path: Path) -> None:
    code = ("import sys, edge_agent.service.daemon\n"
            "from edge_agent.trust.keys import load_signing_key\n"
            "key = load_signing_key(__import__('pathlib').Path(sys.argv[1]))\n"
            "key.sign(b'x')\n"
            "print(sorted(m for m in sys.modules if m.startswith('cryptography')))\n")
    path = tmp_path / "signing.key"
    generate_signing_key(path)
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                         text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout


def test_the_fallback_is_cryptography(tmp_path: Path) -> None:
    code = ("import sys\n"
            "from edge_agent.trust import ed25519\n"
            "key = ed25519.private_from_seed(bytes(32))\n"
            "print(ed25519.libcrypto(), type(key).__module__, key.sign(b'x').hex())\n")
    env = dict(os.environ, EDGE_AGENT_ED25519="cryptography")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60, env=env)
    lib, module, sig = out.stdout.split()
    assert lib == "None" and module.startswith("cryptography")
    assert sig == Ed25519PrivateKey.from_private_bytes(bytes(32)).sign(b"x").hex()
