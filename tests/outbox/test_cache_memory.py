"""The outbox's SQLite page caches stay small behind a lagging broker (issue #15's memory).

SQLite's default cache is 2,000 KiB a connection; the outbox has two (writer, reader), and with
batches waiting for their PUBACKs both caches filled with their pages: ~4.5 MiB of RSS that the
daemon kept. ``schema.CACHE_KIB`` bounds each connection. Measured with SQLite's own counter of
the memory it holds (``sqlite3_memory_used``, process-wide: nothing else opens a database in
this test)."""

from __future__ import annotations

import _sqlite3  # the extension module: its library exports the SQLite C API
import ctypes
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import cast

import pytest

from edge_agent.outbox import schema
from edge_agent.outbox.store import Outbox
from edge_agent.trust.batch import BatchSigner
from tests.outbox.chains import sign_chain


def _sqlite_memory() -> Callable[[], int]:
    try:
        fn = ctypes.CDLL(_sqlite3.__file__).sqlite3_memory_used
    except (OSError, AttributeError):
        pytest.skip("this Python's _sqlite3 does not export sqlite3_memory_used")
    fn.restype = ctypes.c_int64
    fn.argtypes = []
    return cast(Callable[[], int], fn)


def test_both_connections_bound_their_page_cache(outbox: Outbox) -> None:
    for conn in (outbox._w, outbox._r):
        assert conn.execute("PRAGMA cache_size").fetchone()[0] == -schema.CACHE_KIB


def test_lagging_acks_do_not_grow_the_caches(tmp_path: Path, signer: BatchSigner) -> None:
    used = _sqlite_memory()
    box = Outbox(tmp_path / "o.db", cap_bytes=256 << 20)
    try:
        before = used()
        lag = 60  # batches in flight (published, PUBACK not yet back): ~1.8 MB of pages
        batches = sign_chain(signer, box, 100, per_batch=2000)
        assert min(len(b.cose) for b in batches) > 25_000  # each spans ~30 overflow pages
        for b in batches:
            box.append([b])
            assert box.pending(b.seq - 1, 1)[0].seq == b.seq  # read back, as the uplink does
            if b.seq > lag:
                assert box.ack([b.seq - lag]) == 1
        grown = used() - before
        assert box.stats().depth == lag
    finally:
        box.close()
    # the default caches hold every page touched (~3 MiB here); two bounded caches, their
    # page headers and the statements' memory stay well under 1.5 MiB
    assert grown < 1.5 * 2**20, f"SQLite holds {grown / 2**20:.2f} MiB more"
    assert 2 * schema.CACHE_KIB * 1024 < 1.5 * 2**20


def test_a_bounded_cache_reads_a_large_backlog_whole(tmp_path: Path, signer: BatchSigner) -> None:
    """More pending than the cache holds: every batch still reads back intact, in order."""
    with Outbox(tmp_path / "o.db", cap_bytes=256 << 20) as box:
        batches = sign_chain(signer, box, 30, per_batch=2000)
        box.append(batches)
        assert sum(len(b.cose) for b in batches) > 3 * schema.CACHE_KIB * 1024
        got = box.pending(0, 100)
        assert [(b.seq, b.cose) for b in got] == [(b.seq, b.cose) for b in batches]
        with sqlite3.connect(tmp_path / "o.db") as check:
            assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        check.close()
