from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.cli.main import main
from edge_agent.errors import KeyFileError
from edge_agent.trust.keys import (
    fingerprint,
    generate_signing_key,
    kid_of,
    load_public_key,
    load_signing_key,
    private_pem,
    public_pem,
    raw_public,
)


def _write(path: Path, data: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path


def test_generate_is_0600_loadable_and_refuses_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "gw.key"
    old_umask = os.umask(0)  # even a wide-open umask must not leak the key
    try:
        key = generate_signing_key(path)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert raw_public(load_signing_key(path).public_key()) == raw_public(key.public_key())
    before = path.read_bytes()
    with pytest.raises(KeyFileError, match="refusing to overwrite"):
        generate_signing_key(path)
    assert path.read_bytes() == before
    new = generate_signing_key(path, force=True)
    assert raw_public(load_signing_key(path).public_key()) == raw_public(new.public_key())
    assert [p.name for p in tmp_path.iterdir()] == ["gw.key"]  # no temp files left


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o602, 0o644])
def test_permissive_key_file_refused(tmp_path: Path, key: Ed25519PrivateKey, mode: int) -> None:
    path = _write(tmp_path / "k.pem", private_pem(key), mode)
    with pytest.raises(KeyFileError, match=f"{mode:04o}.*chmod 600"):
        load_signing_key(path)


def test_raw_seed_and_pem_give_same_key(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    seed = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    a = load_signing_key(_write(tmp_path / "raw", seed))
    b = load_signing_key(_write(tmp_path / "pem", private_pem(key)))
    assert raw_public(a.public_key()) == raw_public(b.public_key()) == raw_public(key.public_key())


def test_bad_key_files(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="not found"):
        load_signing_key(tmp_path / "missing")
    with pytest.raises(KeyFileError, match="not a PEM"):
        load_signing_key(_write(tmp_path / "junk", b"hello world\n"))
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ec_pem = ec_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(KeyFileError, match="not Ed25519"):
        load_signing_key(_write(tmp_path / "ec", ec_pem))
    ec_pub = ec_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(KeyFileError, match="not Ed25519"):
        load_public_key(_write(tmp_path / "ec.pub", ec_pub))
    with pytest.raises(KeyFileError, match="not a regular file"):
        load_signing_key(tmp_path)


def test_public_key_loading_and_kid(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    pub = key.public_key()
    raw = raw_public(pub)
    from_pem = load_public_key(_write(tmp_path / "p.pem", public_pem(key), 0o644))
    from_raw = load_public_key(_write(tmp_path / "p.raw", raw, 0o644))
    assert raw_public(from_pem) == raw_public(from_raw) == raw
    # kid: first 16 bytes of SHA-256 over the raw 32-byte public key
    assert kid_of(pub) == hashlib.sha256(raw).digest()[:16]
    assert len(kid_of(pub)) == 16
    assert fingerprint(pub) == "sha256:" + hashlib.sha256(raw).hexdigest()
    other = Ed25519PrivateKey.from_private_bytes(bytes(32)).public_key()
    assert kid_of(other) != kid_of(pub)
    with pytest.raises(KeyFileError, match="holds a private key"):
        load_public_key(_write(tmp_path / "priv.pem", private_pem(key)))


def test_cli_keys_generate_and_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, pub_path = tmp_path / "gw.key", tmp_path / "gw.pub.pem"
    assert main(["keys", "generate", str(path), "--public", str(pub_path)]) == 0
    out = capsys.readouterr().out
    pub = load_public_key(pub_path)
    assert f"kid={kid_of(pub).hex()}" in out
    assert f"fingerprint={fingerprint(pub)}" in out
    assert main(["keys", "show", str(path), "--pem"]) == 0
    shown = capsys.readouterr().out
    assert f"kid={kid_of(pub).hex()}" in shown and public_pem(pub).decode() in shown
    assert main(["keys", "show", str(pub_path)]) == 0
    assert f"kid={kid_of(pub).hex()}" in capsys.readouterr().out
    assert main(["keys", "generate", str(path)]) == 1
    assert "refusing to overwrite" in capsys.readouterr().err
    path.chmod(0o644)
    assert main(["keys", "show", str(path)]) == 1
    assert "chmod 600" in capsys.readouterr().err
