"""The daemon inside the shipped unit's sandbox, end to end: what ships is what is tested.

The restrictions come from systemd/edge-agent.service itself (tests/sandbox/unit.py); the harness
applies them without systemd (tests/sandbox/harness.py). Where systemd is PID 1 the same checks
also run in a transient unit started by ``systemd-run`` with the unit's properties.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from edge_agent.commands.model import Action, Command, decode_result, encode_command
from edge_agent.trust.archive import ArchiveReader
from edge_agent.trust.cose import sign1, verify1
from edge_agent.trust.keys import kid_of
from tests.sandbox.conftest import GW, SandboxedGateway
from tests.sandbox.harness import UNIT_FILE, UnitHarness
from tests.support_broker import Subscriber

NOBODY = 65534  # a local user outside every group of the service: node_exporter's standing
# what a sandbox denial looks like in the daemon's log, whatever module meets it
DENIED = re.compile(r"Operation not permitted|Read-only file system|Permission denied|EPERM|"
                    r"errno=1\b|adjtimex_failed|boot_id_unreadable|control_socket_group|"
                    r"metrics_write_failed")


def wait(pred: Callable[[], object], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return bool(pred())


def send_command(gw: SandboxedGateway, action: Action, ctr: int, **kw: object
                 ) -> dict[str, object]:
    """A command signed by the allowlisted operator, published to the gateway's command topic;
    the gateway's signed result."""
    now = int(time.time())
    cmd = Command(os.urandom(16), now, now + 120, ctr, GW, action,
                  str(kw.get("device", "")), str(kw.get("point", "")),
                  kw.get("value"))  # type: ignore[arg-type]
    msg = sign1(encode_command(cmd), gw.operator, kid_of(gw.operator.public_key()))
    # READY=1 does not wait for the network: a command published before the session's SUBSCRIBE
    # reached the broker goes to nobody. The birth status follows that SUBSCRIBE on the same
    # connection (a fresh broker per test: no status of an earlier run is retained)
    status = Subscriber(gw.broker.port, f"edge/{GW}/status")
    try:
        assert wait(lambda: any(json.loads(p)["state"] == "online"
                                for p in status.payloads()), 30), gw.log_text()[-3000:]
    finally:
        status.close()
    res = Subscriber(gw.broker.port, f"edge/{GW}/cmd/res")
    pub = Subscriber(gw.broker.port, "unused/#")
    try:
        pub.client.publish(f"edge/{GW}/cmd", msg, qos=1).wait_for_publish(5)
        assert wait(lambda: res.payloads(), 20), gw.log_text()[-3000:]
        keys = {kid_of(gw.gateway_key.public_key()): gw.gateway_key.public_key()}
        _, payload = verify1(res.payloads()[-1], keys)
        r = decode_result(payload)
        return {"ok": r.ok, "reason": r.reason, "value": r.value}
    finally:
        res.close()
        pub.close()


def host_boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


@pytest.mark.timeout(180)
def test_the_daemon_works_inside_the_shipped_unit(synced_gateway: SandboxedGateway) -> None:
    """Every check runs and every failure is listed: one run shows all the unit breaks."""
    gw = synced_gateway
    h = gw.harness
    problems: list[str] = []

    def check(ok: object, what: str) -> None:
        if not ok:
            problems.append(what)

    # the control socket: the technicians' group, mode 0660
    st = gw.control_socket.stat()
    check(stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660,
          f"control socket mode {oct(st.st_mode)}")
    check(st.st_gid == h.gid, f"control socket gid {st.st_gid}, not edge-agent's {h.gid}")
    # the clock: synchronised (systemd-timesyncd synced a minute ago), the kernel's boot id
    status = gw.call("status")["result"]
    check(status["clock_synced"] is gw.expected_synced,
          f"clock_synced={status['clock_synced']} (source {status.get('clock_source')}) although "
          f"the time source the service may see says {gw.expected_synced}")
    check(status["boot_id"] == host_boot_id(),
          f"boot_id={status['boot_id']!r}, the kernel's is {host_boot_id()!r}")
    # a signed command: accepted and executed
    lamp_up = wait(lambda: any(d["name"] == "lamp-01" and d["last_good_ns"]
                               for d in gw.call("devices")["result"]), 30)
    check(lamp_up, "lamp-01 never came up")
    result = send_command(gw, Action.WRITE, 1, device="lamp-01", point="dimming", value=50)
    if gw.expected_synced:
        check(result == {"ok": True, "reason": "", "value": 50}, f"signed write refused: {result}")
        check(gw.sim.devices["lamp-01"].snapshot()["dimming"] == 50, "the lamp was not dimmed")
        ping = send_command(gw, Action.PING, 2)
        check(ping["value"] == "pong", f"signed ping refused: {ping}")
    else:  # systemd-run on a host whose time source the unit cannot see
        check(result["reason"] == "clock_unsynced", f"unsynced, yet: {result}")
    # the metrics file: written, and readable by a local user outside the service's groups
    metrics = gw.example["health"]["prometheus_textfile"]
    written = wait(lambda: h.host_path(metrics).exists(), 15)
    check(written, f"metrics file {metrics} never written")
    seen = h.in_sandbox(["cat", metrics], uid=NOBODY, gid=NOBODY)
    check(seen.returncode == 0, f"node_exporter's view of {metrics}: {seen.stderr.strip()}")
    check(f'edge_agent_clock_synced{{gateway="{GW}"}} {int(gw.expected_synced)}' in seen.stdout,
          "metrics disagree on the clock")
    # the watchdog is fed
    check(h.wait_notify("WATCHDOG=1", 20), "no WATCHDOG=1 reached the notify socket")
    # the daemon signs through the system OpenSSL inside the unit too (MemoryDenyWriteExecute,
    # ProcSubset=pid: ctypes calls, /proc/self/maps), not by falling back to cryptography
    check("ed25519=libcrypto" in gw.log_text(), "Ed25519 fell back to cryptography in the unit")
    # the runtime tuning (platform/runtime.py: gc.freeze, malloc_trim) runs under the unit's
    # seccomp filter too
    check(re.search(r"runtime_tuned when=started gc_frozen=[1-9]", gw.log_text()),
          "no runtime_tuned line with frozen objects in the unit")
    # a clean stop, and nothing on the way met the sandbox
    check(h.stop_service() == 0, "unclean exit on SIGTERM")
    if isinstance(h, UnitHarness):  # under systemd, systemd consumes it
        check(h.wait_notify("STOPPING=1", 2), "no STOPPING=1")
    denied = sorted({re.sub(r"^\S+ \S+ ", "", ln) for ln in gw.log_text().splitlines()
                     if DENIED.search(ln)})
    check(not denied, "the sandbox denied:\n    " + "\n    ".join(denied))
    assert not problems, "inside the unit's sandbox:\n  " + "\n  ".join(problems)


def doctor_clock(gw: SandboxedGateway) -> dict[str, str]:
    """`edge-agent doctor`'s clock line for the service in the harness (its unit, its socket)."""
    config = gw.harness.host_path("/etc/edge-agent/agent.toml")
    r = subprocess.run(
        [sys.executable, "-m", "edge_agent.cli.main", "doctor", "--config", str(config),
         "--unit", str(UNIT_FILE), "--socket", str(gw.control_socket), "--offline", "--json"],
        capture_output=True, text=True, timeout=60, check=False)
    lines = [c for c in json.loads(r.stdout) if c["name"] == "clock"]
    assert len(lines) == 1, r.stdout + r.stderr
    line: dict[str, str] = lines[0]
    return line


@pytest.mark.timeout(120)
def test_a_stale_clock_refuses_commands_inside_the_unit(unsynced_gateway: SandboxedGateway
                                                        ) -> None:
    gw = unsynced_gateway
    status = gw.call("status")["result"]
    assert status["clock_synced"] is False and status["clock_source"] == "timesyncd", status
    assert send_command(gw, Action.PING, 1)["reason"] == "clock_unsynced"
    clock = doctor_clock(gw)  # what the service concluded, not what the caller's kernel says
    assert clock["status"] in ("WARN", "FAIL") and "running service" in clock["detail"], clock
    assert "source: timesyncd" in clock["detail"] and "clock_unsynced" in clock["detail"], clock


@pytest.mark.timeout(120)
def test_no_visible_time_source_means_unsynced_inside_the_unit(
        sourceless_gateway: SandboxedGateway) -> None:
    """chrony or ntpd leave no flag, and adjtimex is denied: the daemon must not claim sync."""
    gw = sourceless_gateway
    status = gw.call("status")["result"]
    assert status["clock_synced"] is False and status["clock_source"] == "none", status
    assert send_command(gw, Action.PING, 1)["reason"] == "clock_unsynced"
    clock = doctor_clock(gw)
    assert clock["status"] in ("WARN", "FAIL") and "source: none" in clock["detail"], clock
    assert "adjtimex is denied to the service (ProtectClock=yes" in clock["detail"], clock


@pytest.mark.timeout(150)
def test_buffer_export_reaches_the_technicians_directory(harness_gateway: SandboxedGateway,
                                                         tmp_path: Path) -> None:
    """The daemon inside the unit cannot write to a stick, /tmp or a home; it only streams the
    batches over the control socket and the technician's CLI writes the archive."""
    gw = harness_gateway
    gw.broker.stop()  # uplink dead: the outbox fills, the technician carries the data away
    assert wait(lambda: gw.call("buffer")["result"]["depth"] >= 3, 40), gw.log_text()[-2000:]
    stick = tmp_path / "usb"
    stick.mkdir()
    e = subprocess.run(
        [sys.executable, "-m", "edge_agent.cli.main", "buffer", "export", str(stick), "--json"],
        capture_output=True, text=True, timeout=60, check=False,
        env=dict(os.environ, EDGE_AGENT_SOCKET=str(gw.control_socket)))
    assert e.returncode == 0, e.stdout + e.stderr + gw.log_text()[-2000:]
    files = list(stick.iterdir())
    assert len(files) == 1 and files[0].name.startswith(f"{GW}-"), files
    trailer = ArchiveReader(files[0]).check()
    assert trailer.batches >= 3, (e.stdout, gw.log_text()[-2000:])
