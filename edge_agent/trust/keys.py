"""Ed25519 key files: load, generate (0600, atomic, never overwriting), public PEM, kid.

A signing key file is either PEM PKCS#8 (``-----BEGIN PRIVATE KEY-----``, unencrypted) or the raw
32-byte Ed25519 seed. A key the whole box can read is not a gateway identity: loading applies the
secret-file rules of ``config.permissions`` (owner root / the service user / whoever runs the
command; no access for others; group read only for the service group) and refuses it with the
``chmod`` / ``chown`` that fixes it.

A public key file is PEM SubjectPublicKeyInfo (``-----BEGIN PUBLIC KEY-----``) or the raw 32 bytes.

The key id (``kid``) that goes into every COSE_Sign1 protected header is the first 16 bytes of
SHA-256 over the raw 32-byte public key; the fingerprint shown to humans is the full SHA-256.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge_agent.config.permissions import Kind, file_problem
from edge_agent.errors import KeyFileError

KID_LEN = 16
RAW_KEY_LEN = 32
_MAX_KEY_FILE = 64 * 1024


def raw_public(pub: Ed25519PublicKey) -> bytes:
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def kid_of(pub: Ed25519PublicKey) -> bytes:
    """Key id: SHA-256(raw public key)[:16]."""
    return hashlib.sha256(raw_public(pub)).digest()[:KID_LEN]


def fingerprint(pub: Ed25519PublicKey) -> str:
    """Human-facing fingerprint: ``sha256:`` + hex SHA-256 of the raw public key."""
    return "sha256:" + hashlib.sha256(raw_public(pub)).hexdigest()


def public_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return pub.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def private_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _read(path: Path, *, private: bool) -> bytes:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise KeyFileError(f"{path}: key file not found") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot stat key file: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise KeyFileError(f"{path}: not a regular file")
    if private:
        why = file_problem(path, Kind.SECRET, "signing key")
        if why is not None:
            raise KeyFileError(why)
    if st.st_size > _MAX_KEY_FILE:
        raise KeyFileError(f"{path}: {st.st_size} bytes is too large for a key file")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read key file: {exc.strerror}") from None


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    """The gateway's Ed25519 signing key; KeyFileError if missing, unreadable, too permissive
    (any group/other permission bit) or not an Ed25519 private key."""
    data = _read(path, private=True)
    if len(data) == RAW_KEY_LEN and not data.startswith(b"-----"):
        return Ed25519PrivateKey.from_private_bytes(data)
    if b"ENCRYPTED" in data:
        raise KeyFileError(f"{path}: encrypted private keys are not supported")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(
            f"{path}: not a PEM PKCS#8 private key or raw 32-byte seed ({exc})"
        ) from None
    except Exception as exc:  # cryptography raises UnsupportedAlgorithm for exotic keys
        raise KeyFileError(f"{path}: unsupported private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: private key is {type(key).__name__}, not Ed25519")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM SubjectPublicKeyInfo or 32 raw bytes."""
    data = _read(path, private=False)
    if len(data) == RAW_KEY_LEN and not data.startswith(b"-----"):
        return Ed25519PublicKey.from_public_bytes(data)
    if b"PRIVATE KEY" in data:
        raise KeyFileError(f"{path}: holds a private key; give the public key (keys show --pem)")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path}: not a PEM public key or raw 32-byte key ({exc})") from None
    except Exception as exc:
        raise KeyFileError(f"{path}: unsupported public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path}: public key is {type(key).__name__}, not Ed25519")
    return key


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_private_file(path: Path, data: bytes, *, force: bool = False) -> None:
    """Write ``data`` to ``path`` with mode 0600, atomically (temp file + fsync + link/rename +
    directory fsync). Without ``force`` an existing file is never replaced, even racing."""
    path = Path(path)
    if path.exists() and not force:
        raise KeyFileError(f"{path}: already exists; refusing to overwrite (use --force)")
    directory = path.parent
    if not directory.is_dir():
        raise KeyFileError(f"{directory}: directory does not exist")
    tmp = directory / f".{path.name}.tmp-{os.getpid()}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise KeyFileError(f"{tmp}: cannot create: {exc.strerror}") from None
    try:
        try:
            os.fchmod(fd, 0o600)  # whatever the umask
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if force:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails if path appeared meanwhile: no silent overwrite
            except FileExistsError:
                raise KeyFileError(f"{path}: already exists; refusing to overwrite") from None
            os.unlink(tmp)
        _fsync_dir(directory)
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot write key file: {exc.strerror}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def generate_signing_key(path: Path, *, force: bool = False) -> Ed25519PrivateKey:
    """Create a new Ed25519 signing key at ``path`` (PEM PKCS#8, mode 0600, atomic).
    Refuses to overwrite an existing file unless ``force``."""
    key = Ed25519PrivateKey.generate()
    write_private_file(Path(path), private_pem(key), force=force)
    return key
