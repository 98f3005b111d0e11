"""The export archive: what the writer produces reads back byte for byte; every damaged,
truncated or foreign file is refused naming the byte offset."""

from __future__ import annotations

import io
from pathlib import Path

import cbor2
import pytest

from edge_agent.trust.archive import (
    ArchiveError,
    ArchiveReader,
    ArchiveWriter,
    Header,
    is_archive,
    iter_archive,
)
from edge_agent.trust.batch import BatchSigner
from edge_agent.trust.verify import ChainVerifier
from tests.trust.helpers import GATEWAY, build_chain, fixed_key, keyring


def _archive(tmp_path: Path, n: int = 6) -> tuple[Path, list[bytes]]:
    key = fixed_key()
    chain = build_chain(BatchSigner(key, GATEWAY, "boot"), n)
    buf = io.BytesIO()
    w = ArchiveWriter(buf, Header(gateway=GATEWAY, head_seq=n, agent_version="t",
                                  created_ns=1))
    for b in chain:
        w.add(b.cose, seq=b.seq, readings=b.n_readings)
    t = w.finish()
    assert (t.batches, t.first_seq, t.last_seq, t.readings) == (n, 1, n, 4 * n)
    path = tmp_path / "gw.export.cbor"
    path.write_bytes(buf.getvalue())
    return path, [b.cose for b in chain]


def test_round_trip_and_verify(tmp_path: Path) -> None:
    path, coses = _archive(tmp_path)
    assert is_archive(path)
    r = ArchiveReader(path)
    assert r.header.gateway == GATEWAY and r.header.head_seq == 6
    assert [d for _, d in r.batches()] == coses
    assert r.trailer is not None and r.trailer.nbytes == sum(map(len, coses))
    v = ChainVerifier(keyring(fixed_key()))
    for where, data in iter_archive(path):
        assert where.startswith(f"{path}@")
        v.feed(data, source=where)
    rep = v.summary()
    assert rep.ok and rep.batches == 6
    # it is a CBOR sequence any decoder reads: tag 24 manifests around the batch bstrs
    items = []
    with open(path, "rb") as f:
        dec = cbor2.CBORDecoder(f)
        while f.tell() < path.stat().st_size:
            items.append(dec.decode())
    assert len(items) == 8
    assert cbor2.loads(items[0].value)["part"] == "header" and items[1:7] == coses


def test_every_truncation_is_refused_with_its_offset(tmp_path: Path) -> None:
    path, _ = _archive(tmp_path, 3)
    data = path.read_bytes()
    cut = tmp_path / "cut.export.cbor"
    for n in range(len(data)):
        cut.write_bytes(data[:n])
        with pytest.raises(ArchiveError, match=r"byte \d+"):
            ArchiveReader(cut).check()


def test_damage_is_found(tmp_path: Path) -> None:
    path, _ = _archive(tmp_path, 3)
    data = bytearray(path.read_bytes())
    bad = tmp_path / "bad.export.cbor"
    data[200] ^= 0x01  # inside a batch: the digest no longer matches
    bad.write_bytes(bytes(data))
    with pytest.raises(ArchiveError, match="SHA-256"):
        ArchiveReader(bad).check()
    bad.write_bytes(path.read_bytes() + b"\x40")
    with pytest.raises(ArchiveError, match="after the trailer"):
        ArchiveReader(bad).check()
    bad.write_bytes(b"\x5b" + (2**40).to_bytes(8, "big"))  # no header, an absurd length
    with pytest.raises(ArchiveError, match="byte 0: not an edge-agent-export archive"):
        ArchiveReader(bad)
    hdr = cbor2.dumps({"format": "edge-agent-export", "part": "header", "version": 2})
    bad.write_bytes(b"\xd8\x18" + bytes([0x40 | 0x18, len(hdr)]) + hdr)
    with pytest.raises(ArchiveError, match="version 2"):
        ArchiveReader(bad)
    big = b"\xd8\x18\x5b" + (2**40).to_bytes(8, "big")
    bad.write_bytes(big)
    with pytest.raises(ArchiveError, match="over"):
        ArchiveReader(bad)
    with pytest.raises(ArchiveError, match="not in seq order"):
        w = ArchiveWriter(io.BytesIO(), Header(GATEWAY, 1, "t", 1))
        w.add(b"x", seq=2)
        w.add(b"y", seq=2)


def test_document_example_is_what_the_writer_produces(tmp_path: Path) -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "wire-format.md").read_text()
    block = doc.split("<!-- BEGIN ARCHIVE EXAMPLE")[1].split("<!-- END")[0]
    hexed = "".join(block.split("```")[1].split())
    buf = io.BytesIO()
    ArchiveWriter(buf, Header("gw-demo", 0, "0.1.0", 1_800_000_000 * 10**9)).finish()
    assert bytes.fromhex(hexed) == buf.getvalue()
    example = tmp_path / "example.export.cbor"
    example.write_bytes(bytes.fromhex(hexed))
    reader = ArchiveReader(example)
    assert reader.header.gateway == "gw-demo" and reader.check().batches == 0
