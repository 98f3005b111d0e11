"""The export archive: one file carrying a gateway's signed batches (docs/wire-format.md,
"Export archive").

A CBOR sequence (RFC 8742) of three kinds of items::

    header   tag 24 (encoded CBOR) around a bstr holding a map {"format": "edge-agent-export",
             "part": "header", "version": 1, "gateway": tstr, "head_seq": uint,
             "agent_version": tstr, "created_ns": int}
    batch    bstr: one complete COSE_Sign1 batch, byte for byte as signed; in seq order
    trailer  tag 24 around a bstr holding {"format": "edge-agent-export", "part": "trailer",
             "batches": uint, "bytes": uint, "readings": uint, "first_seq": uint / null,
             "last_seq": uint / null, "sha256": bstr(32)}

``sha256`` is over the concatenated batch bytes (contents of the bstrs, not their heads). The
trailer is written last, so an archive cut short (a stick pulled out, a copy interrupted) has none
and is refused with the byte offset where it ends. Nothing here is trusted for authenticity: every
batch carries its own signature and chain link, which ``edge-agent verify`` checks.

Reading never holds more than one batch (at most ``MAX_ITEM`` bytes) in memory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import cbor2

from edge_agent.errors import TrustError

FORMAT = "edge-agent-export"
VERSION = 1
SUFFIX = ".export.cbor"
MAX_ITEM = 16 * 1024 * 1024  # a batch (or a manifest) larger than this is refused
_TAG24 = b"\xd8\x18"


class ArchiveError(TrustError):
    """The file is not a complete, well-formed export archive (names the file and byte offset)."""


@dataclass(frozen=True, slots=True)
class Header:
    gateway: str
    head_seq: int
    agent_version: str
    created_ns: int
    version: int = VERSION


@dataclass(slots=True)
class Trailer:
    batches: int = 0
    nbytes: int = 0  # "bytes" in the manifest
    readings: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    sha256: bytes = b""


def _head(major: int, n: int) -> bytes:
    if n < 24:
        return bytes([major << 5 | n])
    for ai, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if n < 1 << (8 * size):
            return bytes([major << 5 | ai]) + n.to_bytes(size, "big")
    raise ArchiveError(f"length {n} too large for CBOR")


def _manifest(obj: dict[str, Any]) -> bytes:
    body = cbor2.dumps(obj, canonical=True)
    return _TAG24 + _head(2, len(body)) + body


class ArchiveWriter:
    """Writes an archive to an open binary file: ``add`` each batch in seq order, then
    ``finish`` (which writes the trailer; the caller flushes, fsyncs and renames)."""

    def __init__(self, out: BinaryIO, header: Header) -> None:
        self._out = out
        self.header = header
        self.trailer = Trailer()
        self._sha = hashlib.sha256()
        out.write(_manifest({"format": FORMAT, "part": "header", "version": header.version,
                             "gateway": header.gateway, "head_seq": header.head_seq,
                             "agent_version": header.agent_version,
                             "created_ns": header.created_ns}))

    def add(self, cose: bytes, *, seq: int, readings: int = 0) -> None:
        if not cose or len(cose) > MAX_ITEM:
            raise ArchiveError(f"batch seq {seq}: {len(cose)} bytes (1..{MAX_ITEM} allowed)")
        t = self.trailer
        if t.last_seq is not None and seq <= t.last_seq:
            raise ArchiveError(f"batch seq {seq} after seq {t.last_seq}: not in seq order")
        self._out.write(_head(2, len(cose)))
        self._out.write(cose)
        self._sha.update(cose)
        t.batches += 1
        t.nbytes += len(cose)
        t.readings += readings
        t.first_seq = seq if t.first_seq is None else t.first_seq
        t.last_seq = seq

    def finish(self) -> Trailer:
        t = self.trailer
        t.sha256 = self._sha.digest()
        self._out.write(_manifest({"format": FORMAT, "part": "trailer", "batches": t.batches,
                                   "bytes": t.nbytes, "readings": t.readings,
                                   "first_seq": t.first_seq, "last_seq": t.last_seq,
                                   "sha256": t.sha256}))
        return t


@dataclass
class ArchiveReader:
    """Reads an archive: ``header`` on open, ``batches()`` yields (byte offset, COSE bytes) and
    checks the trailer at the end (count, bytes, digest), after which ``trailer`` is set."""

    path: Path
    header: Header = field(init=False)
    trailer: Trailer | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        with open(self.path, "rb") as f:
            self.header = self._read_header(f)

    def _at(self, offset: int, msg: str) -> str:
        return f"{self.path}: byte {offset}: {msg}"

    def _item(self, f: BinaryIO) -> tuple[int, str, bytes] | None:
        """(offset, "batch" | "manifest", bytes) of the next item, None at a clean end."""
        offset = f.tell()
        first = f.read(1)
        if not first:
            return None
        kind = "batch"
        if first == _TAG24[:1]:
            if f.read(1) != _TAG24[1:]:
                raise ArchiveError(self._at(offset, "unexpected CBOR tag (expected 24: a "
                                            "manifest)"))
            kind, first = "manifest", f.read(1)
            if not first:
                raise ArchiveError(self._at(offset, "truncated manifest"))
        major, ai = first[0] >> 5, first[0] & 0x1F
        if major != 2:
            raise ArchiveError(self._at(offset, f"unexpected CBOR item (major type {major}); "
                                        "an archive holds only byte strings and tag-24 manifests"))
        if ai < 24:
            n = ai
        elif ai <= 27:
            size = 1 << (ai - 24)
            raw = f.read(size)
            if len(raw) != size:
                raise ArchiveError(self._at(offset, "truncated length"))
            n = int.from_bytes(raw, "big")
        else:
            raise ArchiveError(self._at(offset, "indefinite or reserved length (only definite "
                                        "lengths)"))
        if n > MAX_ITEM:
            raise ArchiveError(self._at(offset, f"item of {n} bytes (over {MAX_ITEM})"))
        data = f.read(n)
        if len(data) != n:
            raise ArchiveError(self._at(offset, f"truncated: {len(data)} of {n} bytes "
                                        "(the export was cut short)"))
        return offset, kind, data

    def _manifest(self, offset: int, data: bytes, part: str) -> dict[str, Any]:
        try:
            m = cbor2.loads(data)
        except Exception as exc:  # cbor2 raises several types for bad input
            raise ArchiveError(self._at(offset, f"manifest is not CBOR: {exc}")) from None
        if not isinstance(m, dict) or m.get("format") != FORMAT or m.get("part") != part:
            raise ArchiveError(self._at(offset, f"expected the {part} manifest of an {FORMAT} "
                                        "file"))
        return m

    def _read_header(self, f: BinaryIO) -> Header:
        if f.read(2) != _TAG24:
            raise ArchiveError(self._at(0, f"not an {FORMAT} archive (no header)"))
        f.seek(0)
        item = self._item(f)
        if item is None:
            raise ArchiveError(self._at(0, "empty file"))
        offset, kind, data = item
        if kind != "manifest":
            raise ArchiveError(self._at(0, f"not an {FORMAT} archive (no header)"))
        m = self._manifest(offset, data, "header")
        if m.get("version") != VERSION:
            raise ArchiveError(self._at(offset, f"archive version {m.get('version')!r}; this "
                                        f"edge-agent reads version {VERSION}"))
        try:
            return Header(gateway=_typed(m, "gateway", str), head_seq=_typed(m, "head_seq", int),
                          agent_version=_typed(m, "agent_version", str),
                          created_ns=_typed(m, "created_ns", int))
        except ArchiveError as exc:
            raise ArchiveError(self._at(offset, f"header: {exc}")) from None

    def batches(self) -> Iterator[tuple[int, bytes]]:
        sha = hashlib.sha256()
        count = total = 0
        with open(self.path, "rb") as f:
            self._read_header(f)
            while True:
                item = self._item(f)
                if item is None:
                    raise ArchiveError(self._at(f.tell(), "no trailer: the export was cut short "
                                                f"after {count} batches"))
                offset, kind, data = item
                if kind == "batch":
                    sha.update(data)
                    count, total = count + 1, total + len(data)
                    yield offset, data
                    continue
                m = self._manifest(offset, data, "trailer")
                if f.read(1):
                    raise ArchiveError(self._at(f.tell() - 1, "data after the trailer"))
                break
        self.trailer = self._check_trailer(offset, m, count, total, sha.digest())

    def _check_trailer(self, offset: int, m: dict[str, Any], count: int, total: int,
                       digest: bytes) -> Trailer:
        try:
            t = Trailer(batches=_typed(m, "batches", int), nbytes=_typed(m, "bytes", int),
                        readings=_typed(m, "readings", int),
                        first_seq=_typed(m, "first_seq", int, optional=True),
                        last_seq=_typed(m, "last_seq", int, optional=True),
                        sha256=_typed(m, "sha256", bytes))
        except ArchiveError as exc:
            raise ArchiveError(self._at(offset, f"trailer: {exc}")) from None
        if (t.batches, t.nbytes) != (count, total):
            raise ArchiveError(self._at(offset, f"trailer says {t.batches} batches / {t.nbytes} "
                                        f"bytes, the file holds {count} / {total}"))
        if t.sha256 != digest:
            raise ArchiveError(self._at(offset, "SHA-256 of the batches does not match the "
                                        "trailer (the file was altered or damaged)"))
        return t

    def check(self) -> Trailer:
        """Read the whole archive once (structure, count, digest) without keeping it."""
        for _ in self.batches():
            pass
        assert self.trailer is not None
        return self.trailer


def _typed(m: dict[str, Any], key: str, typ: type[Any], *, optional: bool = False) -> Any:
    value = m.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
        raise ArchiveError(f"{key!r} must be {typ.__name__}, got {type(value).__name__}")
    return value


def is_archive(path: Path) -> bool:
    """True when ``path`` is a file that starts like an archive (tag 24)."""
    try:
        with open(path, "rb") as f:
            return f.read(2) == _TAG24
    except OSError:
        return False


def iter_archive(path: Path) -> Iterator[tuple[str, bytes]]:
    """(where, COSE bytes) of every batch of the archive at ``path``, for ``edge-agent verify``;
    ArchiveError (after the batches before it) when the file is damaged or incomplete."""
    reader = ArchiveReader(path)
    for offset, data in reader.batches():
        yield f"{path}@{offset}", data
