"""Ed25519 keys for the daemon without importing ``cryptography`` (issue #15: memory).

``cryptography`` carries its own statically linked OpenSSL (``_rust.abi3.so``): importing it adds
~8 MiB to the daemon's resident set, a quarter of its memory budget, only to sign a few batches a
second. The interpreter has already loaded the system's OpenSSL for ``ssl`` (asyncio, the MQTT
uplink); its ``EVP_DigestSign`` / ``EVP_DigestVerify`` do Ed25519 (OpenSSL >= 1.1.1). This module
reaches them through ``ctypes`` (which the daemon loads anyway) and falls back to
``cryptography`` when that OpenSSL cannot be found or fails the RFC 8032 self-test run before
first use -- so a key always signs, either way, and Ed25519 signatures are deterministic: both
back ends give the same bytes (tests/trust/test_ed25519.py).

The rest of the daemon speaks the two protocols below, which ``cryptography``'s
``Ed25519PrivateKey`` / ``Ed25519PublicKey`` satisfy as they are, so callers (the CLI, the tests,
the consumer-side verifier) may pass either. Verify with :func:`verified` (a bool), not by
catching an exception class: each back end raises its own.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
from typing import Any, Protocol

from edge_agent.errors import BadSignature, ContractError, TrustError

SEED_LEN = 32
SIG_LEN = 64
_NID_ED25519 = 1087  # EVP_PKEY_ED25519
# RFC 8032 section 7.1, TEST 2 (secret key, public key, message, signature)
_SELF_TEST = (
    "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
    "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
    "72",
    "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
    "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
)


class PublicKey(Protocol):
    def verify(self, signature: bytes, data: bytes) -> None: ...

    def public_bytes_raw(self) -> bytes: ...


class PrivateKey(Protocol):
    def sign(self, data: bytes) -> bytes: ...

    def public_key(self) -> PublicKey: ...

    def private_bytes_raw(self) -> bytes: ...


class _LibCrypto:
    """The ctypes prototypes of the few EVP calls used (OpenSSL 1.1.1 and 3.x)."""

    def __init__(self, path: str) -> None:
        lib = ctypes.CDLL(path)
        p, sz, i = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int
        psz = ctypes.POINTER(sz)

        def fn(name: str, res: type | None, *args: type) -> Any:
            f = getattr(lib, name)
            f.restype, f.argtypes = res, list(args)
            return f

        self.new_private = fn("EVP_PKEY_new_raw_private_key", p, i, p, ctypes.c_char_p, sz)
        self.new_public = fn("EVP_PKEY_new_raw_public_key", p, i, p, ctypes.c_char_p, sz)
        self.raw_public = fn("EVP_PKEY_get_raw_public_key", i, p, ctypes.c_char_p, psz)
        self.raw_private = fn("EVP_PKEY_get_raw_private_key", i, p, ctypes.c_char_p, psz)
        self.pkey_free = fn("EVP_PKEY_free", None, p)
        self.ctx_new = fn("EVP_MD_CTX_new", p)
        self.ctx_free = fn("EVP_MD_CTX_free", None, p)
        self.sign_init = fn("EVP_DigestSignInit", i, p, p, p, p, p)
        self.sign = fn("EVP_DigestSign", i, p, ctypes.c_char_p, psz, ctypes.c_char_p, sz)
        self.verify_init = fn("EVP_DigestVerifyInit", i, p, p, p, p, p)
        self.verify = fn("EVP_DigestVerify", i, p, ctypes.c_char_p, sz, ctypes.c_char_p, sz)
        self.clear_error = fn("ERR_clear_error", None)


class _Pkey:
    __slots__ = ("_lib", "_ptr")

    def __init__(self, lib: _LibCrypto, ptr: int | None, what: str) -> None:
        if not ptr:
            lib.clear_error()
            raise TrustError(f"OpenSSL refused the Ed25519 {what}")
        self._lib, self._ptr = lib, ptr

    def __del__(self) -> None:
        ptr = getattr(self, "_ptr", None)
        if ptr:
            self._ptr = 0
            self._lib.pkey_free(ptr)


class LibcryptoPublicKey(_Pkey):
    __slots__ = ("_raw",)

    def __init__(self, lib: _LibCrypto, raw: bytes) -> None:
        _check_len(raw, "public key")
        super().__init__(lib, lib.new_public(_NID_ED25519, None, raw, SEED_LEN), "public key")
        self._raw = bytes(raw)

    def public_bytes_raw(self) -> bytes:
        return self._raw

    def verify(self, signature: bytes, data: bytes) -> None:
        lib = self._lib
        ctx = lib.ctx_new()
        if not ctx:
            raise TrustError("OpenSSL: EVP_MD_CTX_new failed")
        try:
            ok = (lib.verify_init(ctx, None, None, None, self._ptr) == 1
                  and lib.verify(ctx, signature, len(signature), data, len(data)) == 1)
        finally:
            lib.ctx_free(ctx)
        if not ok:
            lib.clear_error()
            raise BadSignature("Ed25519: bad signature")


class LibcryptoPrivateKey(_Pkey):
    __slots__ = ("_public",)

    def __init__(self, lib: _LibCrypto, seed: bytes) -> None:
        _check_len(seed, "private key")
        super().__init__(lib, lib.new_private(_NID_ED25519, None, seed, SEED_LEN), "private key")
        out, n = ctypes.create_string_buffer(SEED_LEN), ctypes.c_size_t(SEED_LEN)
        if lib.raw_public(self._ptr, out, ctypes.byref(n)) != 1 or n.value != SEED_LEN:
            lib.clear_error()
            raise TrustError("OpenSSL gave no Ed25519 public key")
        self._public = LibcryptoPublicKey(lib, out.raw)

    def public_key(self) -> LibcryptoPublicKey:
        return self._public

    def private_bytes_raw(self) -> bytes:
        """The 32-byte seed (to write the key file; never logged)."""
        lib = self._lib
        out, n = ctypes.create_string_buffer(SEED_LEN), ctypes.c_size_t(SEED_LEN)
        if lib.raw_private(self._ptr, out, ctypes.byref(n)) != 1 or n.value != SEED_LEN:
            lib.clear_error()
            raise TrustError("OpenSSL gave no Ed25519 private key bytes")
        return out.raw

    def sign(self, data: bytes) -> bytes:
        lib = self._lib
        ctx = lib.ctx_new()
        if not ctx:
            raise TrustError("OpenSSL: EVP_MD_CTX_new failed")
        out, n = ctypes.create_string_buffer(SIG_LEN), ctypes.c_size_t(SIG_LEN)
        try:
            ok = (lib.sign_init(ctx, None, None, None, self._ptr) == 1
                  and lib.sign(ctx, out, ctypes.byref(n), data, len(data)) == 1)
        finally:
            lib.ctx_free(ctx)
        if not ok or n.value != SIG_LEN:
            lib.clear_error()
            raise TrustError("OpenSSL: EVP_DigestSign failed")
        return out.raw


def _loaded_libcrypto() -> str | None:
    """Path of the libcrypto the interpreter's ``_ssl`` already mapped (none if linked
    statically)."""
    import _ssl  # noqa: F401  (the daemon has it loaded already: asyncio, paho)

    try:
        with open("/proc/self/maps", encoding="ascii", errors="replace") as f:
            for line in f:
                path = line.rstrip("\n").partition("/")[2]
                if path and "/libcrypto.so" in "/" + path:
                    return "/" + path
    except OSError:
        return None
    return None


def _self_tested(lib: _LibCrypto) -> bool:
    seed, pub, msg, sig = (bytes.fromhex(h) for h in _SELF_TEST)
    key = LibcryptoPrivateKey(lib, seed)
    if (key.public_key().public_bytes_raw() != pub or key.sign(msg) != sig
            or key.private_bytes_raw() != seed):
        return False
    check = LibcryptoPublicKey(lib, pub)
    return verified(check, sig, msg) and not verified(check, sig, msg + b"\x00")


_lock = threading.Lock()
_backend: list[_LibCrypto | None] = []


def libcrypto() -> _LibCrypto | None:
    """The system OpenSSL's EVP calls, or None: use ``cryptography``. Decided once per process;
    ``EDGE_AGENT_ED25519=cryptography`` forces the fallback."""
    with _lock:
        if not _backend:
            lib = None
            if os.environ.get("EDGE_AGENT_ED25519") != "cryptography":
                try:
                    path = _loaded_libcrypto()
                    lib = _LibCrypto(path) if path else None
                    if lib is not None and not _self_tested(lib):
                        lib = None
                except (OSError, AttributeError, TrustError):
                    lib = None
            _backend.append(lib)
        return _backend[0]


def _check_len(raw: bytes, what: str) -> None:
    if len(raw) != SEED_LEN:
        raise ContractError(f"an Ed25519 {what} is {SEED_LEN} bytes, not {len(raw)}")


def private_from_seed(seed: bytes) -> PrivateKey:
    """A signing key from its raw 32-byte seed (ContractError if not 32 bytes)."""
    _check_len(seed, "private key")
    lib = libcrypto()
    if lib is not None:
        return LibcryptoPrivateKey(lib, seed)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.from_private_bytes(seed)


def public_from_raw(raw: bytes) -> PublicKey:
    """A verifying key from its raw 32 bytes (ContractError if not 32 bytes)."""
    _check_len(raw, "public key")
    lib = libcrypto()
    if lib is not None:
        return LibcryptoPublicKey(lib, raw)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    return Ed25519PublicKey.from_public_bytes(raw)


def verified(key: PublicKey, signature: bytes, data: bytes) -> bool:
    """Whether ``signature`` over ``data`` checks under ``key`` (of either back end)."""
    try:
        key.verify(signature, data)
    except BadSignature:
        return False
    except Exception as exc:
        exceptions = sys.modules.get("cryptography.exceptions")
        if exceptions is not None and isinstance(exc, exceptions.InvalidSignature):
            return False
        raise
    return True
