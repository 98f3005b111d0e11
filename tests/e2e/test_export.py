"""The real daemon's control socket answers hostile input, and `buffer export` cannot be turned
against the daemon: the daemon only streams, the technician's CLI writes one archive with the
technician's own rights and never follows or overwrites a link."""

from __future__ import annotations

import json
import os
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_agent.trust.archive import ArchiveReader
from tests.support_fs import tmpfs

from .conftest import GW, Gateway
from .technician import free_uid, run_cli_as, sock_gid


def _raw(path: Path, payload: bytes, timeout: float = 10) -> list[dict[str, Any]]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        return [json.loads(line) for line in s.makefile("rb")]


@pytest.mark.timeout(120)
def test_hostile_lines_to_the_real_daemon(gateway: Gateway) -> None:
    gw = gateway
    sock = gw.socket_path
    lines = [
        b"[" * 60_000,
        b"{" * 30_000,
        b'{"op": "status", "x": "' + b"A" * 300_000 + b'"}',
        bytes(range(256)).replace(b"\n", b""),
        b'{"op": "read", "device": {"a": [1, 2]}}',
        b'{"op": "write", "device": "lamp-01", "point": "dimming", "value": [1]}',
        b'{"op": "write", "device": "lamp-01", "point": "dimming", "value": "high"}',
        b'{"op": "read", "device": "no-such-device"}',
        b'{"op": "shutdown"}',
        b'{"op": "buffer_export", "dir": "/var/lib/edge-agent"}',
        b'{"op": "export", "dir": "/var/lib/edge-agent"}',
        b'{"op": "read", "device": "lamp-01", "point": "power"}',
    ]
    replies = _raw(sock, b"\n".join(lines) + b"\n")
    assert len(replies) == len(lines), replies
    codes = [r.get("error") for r in replies]
    assert codes[:7] == ["too_deep", "too_deep", "request_too_long", "bad_request",
                         "bad_argument", "bad_argument", "bad_value"], replies
    assert codes[7:11] == ["unknown_device", "unknown_op", "unknown_op", "bad_argument"]
    assert replies[-1]["ok"] and replies[-1]["result"]["power"] > 0  # same connection served
    # and the daemon is fine: the next connection is served, nothing was dropped on the way
    st = gw.cli("status", "--json")
    assert st.returncode == 0 and json.loads(st.stdout)["gateway_id"] == GW
    assert gw.proc.poll() is None
    # the CLI turns a refusal into one line and an exit code
    r = gw.cli("read", "no-such-device")
    (line,) = r.stderr.strip().splitlines()
    assert r.returncode == 2 and line.startswith("edge-agent read: no device 'no-such-device'")


def _wait_depth(gw: Gateway, n: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = gw.cli("buffer", "--json")
        if r.returncode == 0 and json.loads(r.stdout)["depth"] >= n:
            return
        time.sleep(0.2)
    raise AssertionError("outbox did not fill")


@pytest.mark.timeout(150)
def test_export_as_a_technician_never_follows_links(open_gateway: Gateway) -> None:
    gw = open_gateway
    gw.broker.stop()
    _wait_depth(gw, 5)
    tech = free_uid()
    env = {"EDGE_AGENT_SOCKET": str(gw.socket_path)}
    stick = gw.dir.parent / "stick"
    stick.mkdir()
    os.chown(stick, tech, tech)
    # the technician writes the archive: owned by them, the daemon wrote nothing
    r = run_cli_as(tech, ["buffer", "export", str(stick), "--json"], groups=[sock_gid(gw)], env=env)
    assert r.returncode == 0, r.stderr
    out = Path(json.loads(r.stdout)["file"])
    assert out.parent == stick and out.stat().st_uid == tech
    assert ArchiveReader(out).check().batches == json.loads(r.stdout)["batches"] >= 5
    # a link planted where the archive should go (to the daemon's key, to a file of theirs):
    # refused, the target untouched; a dangling one too
    key = gw.dir / "signing.key"
    key_before = key.read_bytes()
    victim = stick / "victim"
    victim.write_text("keep me")
    for target in (key, victim, stick / "nowhere"):
        link = stick / "planted.export.cbor"
        link.symlink_to(target)
        r = run_cli_as(tech, ["buffer", "export", str(link)], groups=[sock_gid(gw)], env=env)
        assert r.returncode == 1 and "exists; not overwritten" in r.stderr, r.stderr
        link.unlink()
    assert key.read_bytes() == key_before and victim.read_text() == "keep me"
    # a directory the technician may not write: one clear line, nothing left behind
    locked = gw.dir.parent / "locked"
    locked.mkdir(mode=0o755)
    r = run_cli_as(tech, ["buffer", "export", str(locked)], groups=[sock_gid(gw)], env=env)
    assert r.returncode == 1 and "Permission denied" in r.stderr, r.stderr
    # named by the directory the technician chose, not by the temporary file never made
    assert f"{locked}: cannot create " in r.stderr and ".tmp" not in r.stderr, r.stderr
    assert list(locked.iterdir()) == []
    # no daemon socket access (not in the group): exit 3, named
    r = run_cli_as(tech, ["buffer", "export", str(stick)], env=env)
    assert r.returncode == 3 and "Permission denied" in r.stderr, r.stderr
    assert sorted(p.name for p in stick.iterdir()) == sorted([out.name, "victim"])


@pytest.fixture
def tiny_stick(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "stick", "4k") as mnt:
        yield mnt


@pytest.mark.timeout(120)
def test_export_to_a_full_stick_leaves_nothing(gateway: Gateway, tiny_stick: Path) -> None:
    gw = gateway
    gw.broker.stop()
    deadline = time.monotonic() + 60
    while json.loads(gw.cli("buffer", "--json").stdout)["bytes"] < 1024:
        assert time.monotonic() < deadline, "outbox did not grow"
        time.sleep(0.5)
    r = gw.cli("buffer", "export", str(tiny_stick))
    assert r.returncode == 1, r.stdout + r.stderr
    assert re.search(r"\d+(\.\d)? (B|KiB|MiB) free, the export needs about \d+(\.\d)? "
                     r"(KiB|MiB); the outbox keeps every batch", r.stderr.strip()), r.stderr
    assert list(tiny_stick.iterdir()) == []
