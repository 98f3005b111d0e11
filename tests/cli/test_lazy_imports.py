"""`edge-agent COMMAND` imports COMMAND's module, not every command's dependencies; the daemon
loads none of the technician/operator tooling. Measured in fresh interpreters (subprocesses)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.cli.main import command_index, command_modules

PROBE = """
import json, sys
from edge_agent.cli.main import main
try:
    code = main({argv!r})
except SystemExit as exc:
    code = exc.code
print(json.dumps({{"code": code, "modules": sorted(sys.modules)}}))
"""
# what only other commands need: firmware generation, the consumer-side verifier, the config
# summary, the lab
NOT_IN_DAEMON = ("firmware_bridge", "edge_agent.trust.verify", "edge_agent.config.summary",
                 "edge_agent.cli.direct", "edge_agent.cli.importer", "simulators", "pymodbus")


def loaded(argv: list[str]) -> tuple[int, set[str]]:
    res = subprocess.run([sys.executable, "-c", PROBE.format(argv=argv)], capture_output=True,
                         text=True, timeout=60, check=False)
    out = json.loads(res.stdout.strip().splitlines()[-1])
    return out["code"], set(out["modules"])


def cmd_modules(mods: set[str]) -> set[str]:
    return {m for m in mods if m.startswith("edge_agent.cli.cmd_")}


def test_the_index_names_every_command_module() -> None:
    index = command_index()
    assert set(index.values()) == set(command_modules())
    assert index["run"] == "cmd_run" and index["status"] == "cmd_local"
    assert index["check-config"] == "cmd_config" and "sign" not in index  # a sub-sub-command


@pytest.mark.parametrize(("argv", "module"), [(["status", "--help"], "cmd_local"),
                                              (["check-config", "--help"], "cmd_config"),
                                              (["run", "--help"], "cmd_run")])
def test_a_command_imports_only_its_module(argv: list[str], module: str) -> None:
    code, mods = loaded(argv)
    assert code == 0
    assert cmd_modules(mods) == {f"edge_agent.cli.{module}"}
    assert "cryptography" not in mods and "paho" not in mods and "sqlite3" not in mods


# the daemon's usual command line is read without argparse (cli/cmd_run.py's quick_args), and
# paho's imports it never uses are deferred (uplink/__init__.py): ~0.8 MiB together
PARSING_NOT_IN_DAEMON = ("argparse", "gettext", "pkgutil", "edge_agent.cli.parser",
                         "edge_agent.cli.common", "_uuid")  # uuid is there: the stand-in


def test_the_daemon_loads_no_tooling(tmp_path: object) -> None:
    code, mods = loaded(["run", "--config", "/nonexistent/agent.toml"])
    assert code == 2  # refused: no config — but the daemon's modules were imported
    assert "edge_agent.service.daemon" in mods
    assert cmd_modules(mods) == {"edge_agent.cli.cmd_run"}
    assert [m for m in mods if m.split(".")[0] in NOT_IN_DAEMON or m in NOT_IN_DAEMON] == []
    assert [m for m in PARSING_NOT_IN_DAEMON if m in mods] == []


QUICK = [[], ["--config", "a.toml"], ["-c", "a.toml"], ["--config=a=b.toml"],
         ["--log-level", "debug"], ["--log-level=warning", "-c", "x", "--config", "y"],
         ["-c", "x", "--log-level", "error", "--log-level", "info"]]


@pytest.mark.parametrize("argv", QUICK)
@pytest.mark.parametrize("env", [{}, {"EDGE_AGENT_CONFIG": "/e/agent.toml",
                                      "EDGE_AGENT_LOG_LEVEL": "debug"}])
def test_run_reads_its_usual_line_as_argparse_does(argv: list[str], env: dict[str, str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from edge_agent.cli.cmd_run import quick_args
    from edge_agent.cli.main import build_parser

    for k in ("EDGE_AGENT_CONFIG", "EDGE_AGENT_LOG_LEVEL"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    quick = quick_args(argv)
    assert quick is not None
    assert vars(quick) == vars(build_parser("run").parse_args(["run", *argv]))


@pytest.mark.parametrize("argv", [["--help"], ["-h"], ["--conf", "a"], ["--log", "info"],
                                  ["-ca.toml"], ["-c=a.toml"], ["--config"], ["--config="],
                                  ["--config", "-x"], ["--log-level", "loud"], ["extra"],
                                  ["--json"], ["--", "a"]])
def test_anything_else_on_a_run_line_goes_to_argparse(argv: list[str]) -> None:
    from edge_agent.cli.cmd_run import quick_args

    assert quick_args(argv) is None


def test_a_mistake_on_the_run_line_is_argparse_s_usage_error() -> None:
    res = subprocess.run([sys.executable, "-m", "edge_agent.cli.main", "run", "--log-level",
                          "loud"], capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 2 and res.stderr.count("\n") == 1
    assert "unknown choice 'loud'" in res.stderr and "see: edge-agent run --help" in res.stderr


# stdlib the daemon has no use for once running (issue #15's memory, ~2 MiB together): argparse's
# terminal width (shutil, bz2, lzma), ctypes.util.find_library and importlib.resources
# (tempfile, shutil), decimal (a profile's display), difflib (suggestions for a mistake)
STDLIB_NOT_IN_DAEMON = ("shutil", "tempfile", "bz2", "lzma", "decimal", "difflib",
                        "importlib.resources", "ctypes.util")

DAEMON_PROBE = """
import json, sys
from edge_agent.cli.main import build_parser
args = build_parser("run").parse_args(["run", "--config", sys.argv[1]])
from edge_agent.config.load import load_config
import edge_agent.service.daemon
cfg = load_config(args.config)  # profiles_dir unset: the shipped profiles
from edge_agent.poll.engine import Poller
from edge_agent.service.buses import make_buses
owners = make_buses(cfg)
Poller(cfg, owners, lambda r: None)
print(json.dumps(sorted(sys.modules)))
print(json.dumps(sorted(type(o).__name__ for o in owners.values())))
"""
# a gateway of Modbus TCP endpoints only: no serial owners, no pyserial (~0.4 MiB), no RTU
# framing or CRC (the PDUs Modbus TCP shares with RTU are bus/pdu.py)
SERIAL_ONLY = ("serial", "edge_agent.bus.serial_line", "edge_agent.bus.serial_port",
               "edge_agent.bus.at", "edge_agent.bus.late", "edge_agent.bus.rtu",
               "edge_agent.bus.crc", "edge_agent.poll.at_poll", "edge_agent.bus.at_points")


def _daemon_modules(tmp_path: Path, buses: str, devices: str) -> tuple[set[str], list[str]]:
    cfg = tmp_path / "agent.toml"
    cfg.write_text('gateway_id = "gw-1"\n'
                   f'state_dir = "{tmp_path / "state"}"\nruntime_dir = "{tmp_path / "run"}"\n'
                   + buses + devices +
                   f'[keys]\nsigning_key = "{tmp_path / "signing.key"}"\n')
    cfg.chmod(0o600)
    res = subprocess.run([sys.executable, "-c", DAEMON_PROBE, str(cfg)], capture_output=True,
                         text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    return set(json.loads(lines[-2])), json.loads(lines[-1])


def test_the_daemon_loads_no_stdlib_it_does_not_use(tmp_path: Path) -> None:
    """The daemon's command line parsed, a config with the shipped profiles loaded and its
    poller built: none of the modules only tools or mistakes need."""
    mods, owners = _daemon_modules(
        tmp_path, '[[buses]]\nname = "ep"\nkind = "tcp"\nhost = "127.0.0.1"\nport = 1502\n',
        '[[devices]]\nname = "lamp-1"\nprofile = "street_lamp"\nbus = "ep"\nunit_id = 1\n')
    assert "edge_agent.service.daemon" in mods and "edge_agent.profiles.shipped" in mods
    assert [m for m in STDLIB_NOT_IN_DAEMON if m in mods] == []
    assert "edge_agent.profiles.names" not in mods  # "did you mean": only for a mistake
    assert owners == ["TcpEndpoint"]
    assert [m for m in SERIAL_ONLY if m in mods] == []


def test_serial_buses_load_their_owners_when_configured(tmp_path: Path) -> None:
    mods, owners = _daemon_modules(
        tmp_path,
        '[[buses]]\nname = "line"\nkind = "rtu"\nport = "/dev/ttyUSB0"\n'
        '[[buses]]\nname = "nb"\nkind = "at"\nport = "/dev/ttyUSB1"\n',
        '[[devices]]\nname = "wm-1"\nprofile = "water_meter"\nbus = "line"\nunit_id = 1\n'
        '[[devices]]\nname = "nb-1"\nprofile = "nbiot_bc95"\nbus = "nb"\n')
    assert owners == ["AtClient", "SerialRtuBus"]
    assert [m for m in SERIAL_ONLY if m not in mods] == []


def test_help_is_as_wide_as_shutil_says_without_shutil(monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from edge_agent.cli.main import terminal_columns

    for columns in ("57", "", "0", "junk", None):
        if columns is None:
            monkeypatch.delenv("COLUMNS", raising=False)
        else:
            monkeypatch.setenv("COLUMNS", columns)
        assert terminal_columns() == shutil.get_terminal_size().columns


def test_help_and_unknown_commands_still_see_every_command() -> None:
    code, mods = loaded(["--help"])
    assert code == 0 and len(cmd_modules(mods)) == len(command_modules())
    code, mods = loaded(["no-such-command"])
    assert code == 2 and len(cmd_modules(mods)) == len(command_modules())
    code, mods = loaded(["--version"])
    assert code == 0 and cmd_modules(mods) == set()
