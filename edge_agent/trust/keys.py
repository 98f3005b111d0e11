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

import base64
import binascii
import contextlib
import hashlib
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from edge_agent.config.permissions import Kind, file_problem
from edge_agent.errors import KeyFileError
from edge_agent.trust.ed25519 import PrivateKey, PublicKey, private_from_seed, public_from_raw

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

KID_LEN = 16
RAW_KEY_LEN = 32
_MAX_KEY_FILE = 64 * 1024
# the DER of an Ed25519 key in its one usual form (RFC 8410): PKCS#8 v1 without the public key,
# SubjectPublicKeyInfo; read here without cryptography (which the daemon does not import), any
# other form goes to cryptography's parser
_PKCS8_PREFIX = bytes.fromhex("302e020100300506032b657004220420")
_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")


def raw_public(pub: PublicKey) -> bytes:
    return pub.public_bytes_raw()


def kid_of(pub: PublicKey) -> bytes:
    """Key id: SHA-256(raw public key)[:16]."""
    return hashlib.sha256(raw_public(pub)).digest()[:KID_LEN]


def fingerprint(pub: PublicKey) -> str:
    """Human-facing fingerprint: ``sha256:`` + hex SHA-256 of the raw public key."""
    return "sha256:" + hashlib.sha256(raw_public(pub)).hexdigest()


def public_pem(key: PrivateKey | PublicKey) -> bytes:
    """PEM SubjectPublicKeyInfo of ``key`` (or of a private key's public half)."""
    pub = key.public_key() if hasattr(key, "sign") else key  # type: ignore[union-attr]
    der = base64.encodebytes(_SPKI_PREFIX + raw_public(pub))
    return b"-----BEGIN PUBLIC KEY-----\n" + der + b"-----END PUBLIC KEY-----\n"


def _pem_der(data: bytes, label: bytes, prefix: bytes) -> bytes | None:
    """The 32 key bytes of a PEM block holding ``prefix`` + 32 bytes, else None (not this
    simple form: cryptography parses it)."""
    text = data.strip()
    begin, end = b"-----BEGIN " + label + b"-----", b"-----END " + label + b"-----"
    if not (text.startswith(begin) and text.endswith(end)) or text.count(b"-----") != 4:
        return None
    try:
        der = base64.b64decode(b"".join(text[len(begin):-len(end)].split()), validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(der) != len(prefix) + RAW_KEY_LEN or not der.startswith(prefix):
        return None
    return der[len(prefix):]


def private_pem(key: PrivateKey) -> bytes:
    """PEM PKCS#8 (unencrypted) of ``key``, as ``openssl genpkey -algorithm ed25519`` writes."""
    der = base64.encodebytes(_PKCS8_PREFIX + key.private_bytes_raw())
    return b"-----BEGIN PRIVATE KEY-----\n" + der + b"-----END PRIVATE KEY-----\n"


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


def _refuse_public(path: Path) -> None:
    """A public key given where the private one is needed (``--key x.pub``): said so, before
    its (public) file mode is judged as a secret's."""
    try:
        with open(path, "rb") as f:
            head = f.read(256)
    except OSError:
        return  # _read names what is wrong with the file
    if b"-----BEGIN PUBLIC KEY-----" in head:
        raise KeyFileError(f"{path}: holds a public key; signing needs the private key (the "
                           "key file it was made from, not the .pub)")


def load_signing_key(path: Path) -> PrivateKey:
    """The gateway's Ed25519 signing key; KeyFileError if missing, unreadable, too permissive
    (any group/other permission bit) or not an Ed25519 private key."""
    _refuse_public(path)
    data = _read(path, private=True)
    if len(data) == RAW_KEY_LEN and not data.startswith(b"-----"):
        return private_from_seed(data)
    if b"ENCRYPTED" in data:
        raise KeyFileError(f"{path}: encrypted private keys are not supported")
    seed = _pem_der(data, b"PRIVATE KEY", _PKCS8_PREFIX)
    if seed is not None:
        return private_from_seed(seed)
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

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


def load_public_key(path: Path) -> PublicKey:
    """An Ed25519 public key from PEM SubjectPublicKeyInfo or 32 raw bytes."""
    data = _read(path, private=False)
    if len(data) == RAW_KEY_LEN and not data.startswith(b"-----"):
        return public_from_raw(data)
    if b"PRIVATE KEY" in data:
        raise KeyFileError(f"{path}: holds a private key; give the public key (keys show --pem)")
    raw = _pem_der(data, b"PUBLIC KEY", _SPKI_PREFIX)
    if raw is not None:
        return public_from_raw(raw)
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

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
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    write_private_file(Path(path), private_pem(key), force=force)
    return key
