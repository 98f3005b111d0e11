"""What the technician reads when something is wrong says what is wrong there: "did you mean" finds
the obvious name (lamp-1 is lamp-01), a Modbus TCP device that cannot be reached or answers
garbage is named by host:port with network hints (not "is the adapter plugged in", not "baud
rate"), no library log line reaches the terminal, a directory holding an archive is named as such,
a pseudo filesystem is not "0.0 MiB free", --help names $EDGE_AGENT_CONFIG rather than its value,
and the demo's view shows a reading's quality where it has no value."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from edge_agent.cli.common import UnknownName, suggest
from edge_agent.cli.exporter import ExportError, check_room
from edge_agent.cli.importer import batches_of
from edge_agent.errors import UplinkError
from edge_agent.profiles.fields import did_you_mean
from edge_agent.profiles.names import closest, normal
from edge_agent.trust.archive import ArchiveWriter, Header
from edge_agent.trust.batch import BatchSigner
from tests.trust.helpers import build_chain, fixed_key

CLI = [sys.executable, "-m", "edge_agent.cli.main"]
LAMPS = [f"lamp-{i:02d}" for i in range(1, 21)]


def test_the_obvious_name_first() -> None:
    assert normal("Lamp-007") == "lamp-7" and normal("rs485-1") == "rs485-1"
    assert closest("lamp-1", LAMPS) == ["lamp-01"]  # not lamp-10, lamp-11, lamp-12
    assert closest("LAMP-3", LAMPS) == ["lamp-03"]
    assert closest("lmap-03", LAMPS)[0] == "lamp-03"
    assert closest("lamp-100", LAMPS)[0] == "lamp-10"
    points = ["flow_rate", "totalizer", "serial_number", "valve", "reverse_flow"]
    assert closest("flow_rte", points)[0] == "flow_rate"
    assert closest("flow", points)[0] == "flow_rate"
    assert closest("serial", points) == ["serial_number"]
    assert closest("zzz", points) == [] and closest("", points) == []
    # one matcher for every "did you mean": the CLI's names and the config's keys
    assert suggest("lamp-1", LAMPS) == ["lamp-01"]
    assert did_you_mean("lamp-1", LAMPS) == "did you mean 'lamp-01'?"
    err = UnknownName("device", "lamp-1", LAMPS, "edge-agent devices")
    assert err.hint.startswith("did you mean 'lamp-01'?") and "lamp-10" not in err.hint


def one_line(r: subprocess.CompletedProcess[str], code: int) -> str:
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr  # no log line before it
    return lines[0]


def cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "EDGE_AGENT_SOCKET": str(tmp_path / "none.sock")}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60,
                          check=False, env=env)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def not_modbus() -> Iterator[int]:
    """A TCP port that answers like a web server."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    srv.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                try:
                    conn.recv(256)
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
                except OSError:
                    pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield int(srv.getsockname()[1])
    finally:
        stop.set()
        t.join(5)
        srv.close()


@pytest.mark.timeout(120)
def test_a_modbus_tcp_device_is_named_by_host_and_port(tmp_path: Path, not_modbus: int) -> None:
    port = closed_port()
    msg = one_line(cli(tmp_path, "modbus", "read", f"127.0.0.1:{port}", "1", "hr", "0"), 1)
    assert f"cannot connect to the Modbus TCP device at 127.0.0.1:{port}" in msg, msg
    assert "ping 127.0.0.1" in msg and "adapter" not in msg and "connect_failed" not in msg
    msg = one_line(cli(tmp_path, "modbus", "read", f"127.0.0.1:{not_modbus}", "1", "hr", "0"),
                   1)
    assert f"garbled answer from 127.0.0.1:{not_modbus}" in msg, msg
    assert "speak Modbus TCP" in msg and "baud" not in msg and "parity" not in msg
    # the library's log lines are there for whoever asks for them
    env = {"PATH": "/usr/bin:/bin", "EDGE_AGENT_SOCKET": str(tmp_path / "none.sock"),
           "EDGE_AGENT_DEBUG": "1"}
    r = subprocess.run([*CLI, "modbus", "read", f"127.0.0.1:{port}", "1", "hr", "0"],
                       capture_output=True, text=True, timeout=60, check=False, env=env)
    assert "connect_failed" in r.stderr, r.stderr


def test_a_directory_holding_an_archive_is_named(tmp_path: Path) -> None:
    buf = io.BytesIO()
    w = ArchiveWriter(buf, Header("gw-a", 3, "t", 1))
    for b in build_chain(BatchSigner(fixed_key(1), "gw-a", "boot"), 3):
        w.add(b.cose, seq=b.seq)
    w.finish()
    (tmp_path / "usb").mkdir()
    (tmp_path / "usb" / "gw-a-20260101T000000Z.export.cbor").write_bytes(buf.getvalue())
    with pytest.raises(UplinkError, match=r"holds 1 export archive\(s\).*pass the file"):
        batches_of([tmp_path / "usb"])
    total, _ = batches_of([tmp_path / "usb" / "gw-a-20260101T000000Z.export.cbor"])
    assert total == 3
    (tmp_path / "empty").mkdir()
    with pytest.raises(UplinkError, match="no batches to import"):
        batches_of([tmp_path / "empty"])


def test_an_export_into_a_pseudo_filesystem_is_named(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="not a filesystem for files"):
        check_room(Path(f"/proc/{os.getpid()}"), 4096)
    check_room(tmp_path, 4096)
    with pytest.raises(ExportError, match=r"free, the export needs about \d+(\.\d)? [KMGT]?i?B"):
        check_room(tmp_path, 2**62)


def test_help_names_the_variable_not_its_value(tmp_path: Path) -> None:
    secret = str(tmp_path / "site-secret" / "agent.toml")
    env = dict(os.environ, EDGE_AGENT_CONFIG=secret)
    for args in (["read", "--help"], ["run", "--help"], ["completion", "man"],
                 ["completion", "bash"], ["status", "--help"]):
        r = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60,
                           check=False, env=env)
        assert r.returncode == 0 and "site-secret" not in r.stdout, (args, r.stdout[-500:])
    r = subprocess.run([*CLI, "read", "--help"], capture_output=True, text=True, timeout=60,
                       check=True, env=env)
    assert "$EDGE_AGENT_CONFIG" in r.stdout


def test_the_demo_view_shows_quality_not_none() -> None:
    from simulators.demo.run import _AgentExited, _verdict
    from simulators.demo.view import render

    latest = {("meter-03", "flow_rate"): (None, "m³/h", "bad timeout"),
              ("meter-01", "flow_rate"): (0.4729000031948, "m³/h", "good"),
              ("lamp-01", "power"): (61.5, "W", "out_of_range above")}
    rep = SimpleNamespace(batches=3, readings=9, ok=True)
    demo = SimpleNamespace(consumer=SimpleNamespace(report=lambda: rep, snapshot=lambda: latest),
                           broker=SimpleNamespace(running=True), t0=0.0, events=[])
    text = render(demo, {}, [], width=80, height=24)  # type: ignore[arg-type]
    assert "None" not in text, text
    assert "meter-03.flow_rate   BAD TIMEOUT" in text, text
    assert "0.4729 m³/h" in text and "61.5 W RANGE" in text, text
    # one verdict: a run whose agent died is not "ALL VERIFIED"
    why = _AgentExited(-9).why()
    assert why == "the agent was killed by SIGKILL"
    assert _verdict(True, 76, why).startswith("FAILED: the agent was killed by SIGKILL")
    assert _verdict(True, 76, "") == "ALL VERIFIED" and _verdict(True, 0, "") == "FAILED"


def test_an_archive_of_an_empty_outbox_imports_as_nothing(tmp_path: Path) -> None:
    """`buffer export` of an empty outbox writes a valid archive with no batches; `buffer
    import` used to refuse it ("no batches to import"): it is 0 batches, no broker needed."""
    from edge_agent.cli.importer import import_batches

    buf = io.BytesIO()
    w = ArchiveWriter(buf, Header("gw-a", 0, "t", 1))
    w.finish()
    arc = tmp_path / "gw-a-20260101T000000Z.export.cbor"
    arc.write_bytes(buf.getvalue())
    total, _ = batches_of([arc])
    assert total == 0
    assert import_batches([arc], "127.0.0.1", 1) == {"gw-a": 0}  # port 1: never connected
    out = subprocess.run([sys.executable, "-m", "edge_agent.cli.main", "buffer", "import",
                          str(arc), "--broker", "127.0.0.1:1"], capture_output=True, text=True,
                         timeout=60, check=False)
    assert out.returncode == 0 and "gw-a: the archive holds no batches" in out.stdout, out
