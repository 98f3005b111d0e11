"""The technician whose account lacks a right (issue #13, the reviewer's first two defects): a
serial port it may not open, a config it may not read. Each is said as what it is -- "not
permitted", the group to join -- in one line with exit 3, never "no device answered", "is the
adapter plugged in?" or "run check-config"; with --json an error code. Run as a throwaway uid on
the real gateway's real ptys (tests/e2e/technician.py); the same uid given the group succeeds."""

from __future__ import annotations

import grp
import json
import os
import signal
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.technician import free_uid, need_root, open_dir, run_cli_as

from .conftest import Gateway

DIALOUT = "dialout"


def one_line(res: subprocess.CompletedProcess[str], code: int) -> str:
    assert "Traceback" not in res.stdout + res.stderr, res.stderr
    assert res.returncode == code, (res.returncode, res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and not res.stdout.strip(), (res.stdout, res.stderr)
    return lines[0]


def json_error(res: subprocess.CompletedProcess[str], code: int) -> dict[str, object]:
    assert "Traceback" not in res.stdout + res.stderr, res.stderr
    assert res.returncode == code, (res.returncode, res.stdout, res.stderr)
    obj: dict[str, object] = json.loads(res.stdout)
    assert obj["ok"] is False and obj["exit"] == code, obj
    return obj


def bus_port(config: Path, bus: str) -> str:
    data = tomllib.loads(config.read_text())
    return str(next(b["port"] for b in data["buses"] if b["name"] == bus))


@pytest.fixture
def dialout() -> int:
    need_root()
    try:
        return grp.getgrnam(DIALOUT).gr_gid
    except KeyError:
        pytest.skip("no dialout group on this machine")


@pytest.mark.timeout(180)
def test_a_port_this_user_may_not_open_is_said_so(open_gateway: Gateway, dialout: int) -> None:
    gw = open_gateway
    gw.proc.send_signal(signal.SIGTERM)
    assert gw.proc.wait(20) == 0
    port = bus_port(gw.config, "rs485-water")
    real = os.path.realpath(port)
    os.chown(real, 0, dialout)
    os.chmod(real, 0o660)  # as a USB adapter's /dev/ttyUSB0: root:dialout 0660
    cfg = ["--config", str(gw.config)]
    uid = free_uid()
    for argv in (["read", "meter-01", "--direct"],
                 ["scan", "rs485-water", "--units", "1-3"],
                 ["modbus", "read", "rs485-water", "1", "holding", "0"],
                 ["profile", "new", "p7", "--scan", "rs485-water", "1", "--out", "/tmp"]):
        msg = one_line(run_cli_as(uid, [*argv, *cfg]), 3)
        assert f"not permitted to open {port}" in msg, (argv, msg)
        assert f"join the '{DIALOUT}' group" in msg and "usermod" in msg, (argv, msg)
        for wrong in ("no device answered", "plugged in", "BusClosed", "journalctl",
                      "the port refused it"):
            assert wrong not in msg, (argv, msg)
        obj = json_error(run_cli_as(uid, [*argv, *cfg, "--json"]), 3)
        assert obj["error"] == "port_not_permitted", (argv, obj)
        assert port in str(obj["message"]) and DIALOUT in str(obj["hint"]), obj
    # the same technician once in the group: the port opens, the meter answers
    ok = run_cli_as(uid, ["read", "meter-01", "--direct", *cfg], groups=[dialout])
    assert ok.returncode == 0 and "flow_rate" in ok.stdout, ok.stderr


@pytest.fixture
def locked_config() -> Iterator[Path]:
    """A config under a directory of mode 0750 root:GROUP (as /etc/edge-agent, root:edge-agent):
    GROUP here is a fresh gid with no name, so the hint names the default group, edge-agent."""
    need_root()
    with open_dir() as base:
        etc = base / "etc"
        etc.mkdir()
        cfg = etc / "agent.toml"
        cfg.write_text('gateway_id = "gw-1"\n')
        os.chown(etc, 0, free_uid(62_000))
        os.chmod(etc, 0o750)
        yield cfg


@pytest.mark.timeout(120)
def test_a_config_this_user_may_not_read_asks_for_the_group(locked_config: Path) -> None:
    cfg = locked_config
    uid = free_uid()
    env_cfg = {"EDGE_AGENT_CONFIG": str(cfg)}
    runs = [(["status", "--config", str(cfg)], None), (["status"], env_cfg),
            (["devices", "-c", str(cfg)], None), (["read", "lamp-01", "--direct"], env_cfg),
            (["modbus", "read", "rs485-water", "1", "holding", "0"], env_cfg),
            (["check-config", str(cfg)], None)]
    for argv, env in runs:
        msg = one_line(run_cli_as(uid, argv, env=env), 3)
        assert f"not permitted to read {cfg}" in msg, (argv, msg)
        assert "join the 'edge-agent' group" in msg and "sudo" in msg, (argv, msg)
        assert "run: edge-agent check-config" not in msg and "does not load" not in msg, msg
        obj = json_error(run_cli_as(uid, [*argv, "--json"], env=env), 3)
        assert obj["error"] == "config_not_permitted", (argv, obj)
