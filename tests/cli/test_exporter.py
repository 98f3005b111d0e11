"""The CLI side of `buffer export`: the archive appears complete or not at all, a planted link is
never followed, a full stick or a daemon that goes away mid-export leaves nothing behind."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_agent.cli import exporter
from edge_agent.cli.exporter import ExportError, NewFile, export_to, rename_noreplace
from edge_agent.control.client import ControlRefused, ControlUnavailable
from edge_agent.control.server import ControlServer
from edge_agent.outbox.store import Outbox
from edge_agent.service.export import export_stream
from edge_agent.trust.archive import ArchiveReader
from edge_agent.trust.batch import BatchSigner
from tests.control.test_server import Target
from tests.support_fs import tmpfs
from tests.trust.helpers import build_chain, fixed_key


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Outbox]:
    b = Outbox(tmp_path / "outbox.db", cap_bytes=64 * 1024 * 1024)
    chain = build_chain(BatchSigner(fixed_key(), "gw-x", "boot"), 300, per_batch=60)
    b.append(chain)
    yield b
    b.close()


class Lying(Target):
    """Claims an empty outbox in the head (so the space check passes), then optionally dies."""

    def __init__(self, outbox: Outbox, die_after: int | None = None,
                 exc: Exception | None = None) -> None:
        super().__init__(outbox)
        self.die_after = die_after
        self.exc = exc or OSError(5, "Input/output error", "outbox.db")

    async def export(self, after_seq: int = 0) -> AsyncIterator[dict[str, Any]]:
        assert self.outbox is not None
        n = 0
        async for msg in export_stream(self.outbox, "gw-x", after_seq):
            if msg.get("stream"):
                msg = msg | {"bytes": 0, "depth": 0}
            if self.die_after is not None and n == self.die_after:
                raise self.exc
            n += 1
            yield msg


def _export(tmp_path: Path, target: Target, dest: Path) -> Any:
    async def main() -> Any:
        server = ControlServer(tmp_path / "c.sock", target)
        await server.start()
        try:
            return await asyncio.to_thread(export_to, tmp_path / "c.sock", dest)
        finally:
            await server.stop()

    return asyncio.run(main())


def test_export_writes_one_complete_archive(tmp_path: Path, box: Outbox) -> None:
    usb = tmp_path / "usb"
    usb.mkdir()
    res = _export(tmp_path, Target(box), usb)
    assert res.path.parent == usb and res.path.name.startswith("gw-20")
    assert res.path.name.endswith(".export.cbor")
    assert os.listdir(usb) == [res.path.name]
    t = ArchiveReader(res.path).check()
    assert (t.batches, t.first_seq, t.last_seq, t.readings) == (300, 1, 300, 300 * 60)
    # a named new file; the same name again is refused, the first one kept
    named = usb / "mine.export.cbor"
    _export(tmp_path, Target(box), named)
    before = named.read_bytes()
    with pytest.raises(ExportError, match="exists; not overwritten"):
        _export(tmp_path, Target(box), named)
    assert named.read_bytes() == before
    with pytest.raises(ExportError, match="no such directory"):
        _export(tmp_path, Target(box), tmp_path / "unmounted" / "x.cbor")


def test_full_stick_and_dying_daemon_leave_nothing(tmp_path: Path, box: Outbox) -> None:
    with tmpfs(tmp_path / "stick", "64k") as stick:
        with pytest.raises(ExportError, match="No space left on device; nothing was written") \
                as full:
            _export(tmp_path, Lying(box), stick)
        assert str(full.value).startswith(f"{stick}/") and ".tmp" not in str(full.value)
        assert os.listdir(stick) == []
    usb = tmp_path / "usb"
    usb.mkdir()
    with pytest.raises(ControlRefused, match=r"os_error: Input/output error: outbox\.db"):
        _export(tmp_path, Lying(box, die_after=100), usb)  # the daemon says why it stopped
    assert os.listdir(usb) == []
    with pytest.raises(ControlUnavailable, match="closed the connection"):
        _export(tmp_path, Lying(box, die_after=100, exc=ConnectionResetError()), usb)
    assert os.listdir(usb) == []


def test_planted_temp_link_is_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("secret")
    d = tmp_path / "usb"
    d.mkdir()
    (d / f".a.cbor.{os.getpid()}.tmp").symlink_to(victim)
    with pytest.raises(ExportError, match="planted"):
        NewFile(d, "a.cbor")
    assert victim.read_text() == "secret"


def test_rename_without_renameat2_still_refuses_to_replace(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(exporter, "_renameat2", lambda: None)
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        (tmp_path / "a").write_text("new")
        (tmp_path / "b").symlink_to(tmp_path / "elsewhere")
        with pytest.raises(ExportError, match="exists; not overwritten"):
            rename_noreplace(fd, "a", "b")
        assert not (tmp_path / "elsewhere").exists()
        rename_noreplace(fd, "a", "c")
        assert (tmp_path / "c").read_text() == "new" and not (tmp_path / "a").exists()
    finally:
        os.close(fd)
