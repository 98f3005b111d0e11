"""Doctor answers for the service inside its unit, read from the unit file (the shipped one, with
drop-ins): the clock as the daemon there judges it (adjtimex denied: timesyncd's flag only), the
running daemon's verdict first; the config's paths against the unit's writable paths."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import pytest

from edge_agent.cli.doctor_unit import check_clock, check_unit_paths
from edge_agent.config.load import load_config
from edge_agent.config.model import AgentConfig
from edge_agent.platform.clock import ClockSync, Timex
from edge_agent.platform.unit_file import HIDDEN, PRIVATE, READ_ONLY, WRITE, ServiceUnit

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "systemd" / "edge-agent.service"
EXAMPLE = ROOT / "device_profiles" / "examples" / "street-gateway.toml"
CHRONY_DROP_IN = "[Service]\nProtectClock=no\nSystemCallFilter=adjtimex\n"  # docs/operations.md


def kernel(maxerror_us: int) -> ClockSync:
    """The caller's view of a kernel whose maximum error is ``maxerror_us`` (adjtimex allowed)."""
    tx = Timex()
    tx.maxerror = maxerror_us
    return ClockSync(Path("/nonexistent/flag"), adjtimex=lambda: (0, tx))


def shipped(*drop_ins: str) -> ServiceUnit:
    texts = [(str(SHIPPED), SHIPPED.read_text())]
    texts += [(f"drop-in-{i}.conf", t) for i, t in enumerate(drop_ins)]
    return ServiceUnit.from_texts(texts, str(SHIPPED))


def test_the_shipped_unit_denies_adjtimex_and_the_chrony_drop_in_allows_it() -> None:
    assert not shipped().syscall_allowed("adjtimex")
    allowed = shipped(CHRONY_DROP_IN)
    assert allowed.syscall_allowed("adjtimex")
    assert not allowed.syscall_allowed("clock_settime") and not allowed.syscall_allowed("mount")


def test_a_chrony_box_is_synchronised_for_the_kernel_and_not_for_the_service(
        tmp_path: Path) -> None:
    flag = tmp_path / "synchronized"  # timesyncd never ran: no flag
    c = check_clock(False, shipped(), flag=flag, kernel=kernel(2_000))
    assert c.status == "FAIL", c
    assert "kernel's clock is synchronised" in c.detail and "ProtectClock=yes" in c.detail
    assert "source: none" in c.detail and "clock_unsynced" in c.detail
    assert "drop-in" in c.hint and "timesyncd" in c.hint
    # with the drop-in of docs/operations.md the service reads the kernel itself
    c = check_clock(False, shipped(CHRONY_DROP_IN), flag=flag, kernel=kernel(2_000))
    assert c.status == "PASS" and "source: adjtimex" in c.detail, c


def test_timesyncd_flag_is_what_the_service_sees(tmp_path: Path) -> None:
    flag = tmp_path / "synchronized"
    flag.touch()
    c = check_clock(False, shipped(), flag=flag, kernel=kernel(2_000))
    assert c.status == "PASS" and "source: timesyncd" in c.detail, c
    old = time.time() - 10 * 3600  # past 16 s of maximum error at 500 ppm
    os.utime(flag, (old, old))
    c = check_clock(False, shipped(), flag=flag, kernel=kernel(20_000_000))
    assert c.status == "WARN" and "source: timesyncd" in c.detail, c
    assert "clock_unsynced" in c.detail


def test_the_running_daemons_verdict_comes_first(tmp_path: Path) -> None:
    flag = tmp_path / "synchronized"
    flag.touch()
    c = check_clock(False, shipped(), {"clock_synced": False, "clock_source": "none"},
                    flag=flag, kernel=kernel(2_000))
    assert c.status != "PASS" and "running service" in c.detail, c
    c = check_clock(False, shipped(), {"clock_synced": True, "clock_source": "timesyncd"},
                    flag=tmp_path / "none", kernel=kernel(20_000_000))
    assert c.status == "PASS" and "running service" in c.detail, c


@pytest.fixture(scope="module")
def example() -> AgentConfig:
    return load_config(EXAMPLE)


def test_where_the_shipped_unit_lets_the_service_write() -> None:
    u = shipped()
    assert u.where(Path("/var/lib/edge-agent/outbox.sqlite")) == (WRITE, "StateDirectory="
                                                                  "edge-agent")
    assert u.where(Path("/run/edge-agent-metrics"))[0] == WRITE
    assert u.where(Path("/run/edge-agent-other"))[0] == READ_ONLY
    assert u.where(Path("/etc/edge-agent"))[0] == READ_ONLY  # ConfigurationDirectory=
    assert u.where(Path("/tmp/x")) == (PRIVATE, "PrivateTmp=yes")
    assert u.where(Path("/home/pi/x")) == (HIDDEN, "ProtectHome=yes")
    assert u.where(Path("/root"))[0] == HIDDEN


def test_the_example_configs_paths_fit_the_shipped_unit(example: AgentConfig) -> None:
    got = check_unit_paths(example, shipped())
    assert [c.status for c in got] == ["PASS"], got


def test_paths_outside_the_units_writable_ones_fail(example: AgentConfig) -> None:
    bad = dataclasses.replace(
        example, state_dir=Path("/tmp/edge-agent"), runtime_dir=Path("/home/pi/run"),
        outbox=dataclasses.replace(example.outbox, path=Path("/opt/edge-agent/outbox.db")),
        prometheus_textfile=Path("/var/lib/node_exporter/textfile/edge.prom"),
        keys=dataclasses.replace(example.keys, signing_key=Path("/root/signing.key")))
    got = {c.detail.split(":")[0]: c for c in check_unit_paths(bad, shipped())}
    assert all(c.status == "FAIL" for c in got.values()), got
    assert "PrivateTmp=yes" in got["state_dir"].detail
    assert "outbox, the chain" in got["state_dir"].detail
    assert "ProtectHome=yes hides" in got["runtime_dir"].detail
    assert "read-only" in got["outbox.path"].detail
    assert "read-only" in got["health.prometheus_textfile"].detail
    assert "hides it" in got["keys.signing_key"].detail
    assert "ReadWritePaths=" in got["outbox.path"].hint
    # a drop-in giving the service a data partition
    moved = dataclasses.replace(
        example, outbox=dataclasses.replace(example.outbox, path=Path("/data/outbox.db")))
    assert check_unit_paths(moved, shipped())[0].status == "FAIL"
    ok = check_unit_paths(moved, shipped("[Service]\nReadWritePaths=/data\n"))
    assert [c.status for c in ok] == ["PASS"], ok


def test_no_installed_unit_is_said() -> None:
    assert check_unit_paths(load_config(EXAMPLE), None)[0].status == "SKIP"
