"""Every CLI error is one line that says what to do (or one JSON object with --json), with its
exit code, and never a traceback: every sub-command of the argparse tree is driven through its
usage errors (unknown option, bad values, unknown choices, missing arguments), every command that
needs the daemon through "daemon stopped" and "socket not permitted", and a bug in a command
through the last-resort handler. The daemon-side paths (unknown names, refusals, broken pipe,
Ctrl-C) are in tests/e2e/test_cli_errors.py."""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.cli import main as cli_main
from edge_agent.cli.common import EXIT_NO_DAEMON, EXIT_USAGE
from tests.e2e.technician import free_uid, need_root, open_dir, run_cli_as


def leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[
        tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """(argv prefix, parser) of every command that runs something."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if (not subs or not subs[0].required or parser.get_default("func") is not None) and path:
        yield path, parser
    for sub in subs:
        for name, child in sub.choices.items():
            yield from leaves(child, (*path, name))


LEAVES = sorted(leaves(cli_main.build_parser()), key=lambda x: x[0])


def filled(parser: argparse.ArgumentParser) -> tuple[list[argparse.Action],
                                                     list[argparse.Action], list[str]]:
    """(required positionals, required options, argv giving each a plausible value)."""
    positionals = [a for a in parser._actions if not a.option_strings and a.required
                   and not isinstance(a, argparse._SubParsersAction)]
    fill = ["1" if a.type not in (None, str, Path) else "x"
            for a in positionals if a.nargs in (None, "+")]
    required = [a for a in parser._actions if a.option_strings and a.required]
    required += [g._group_actions[0] for g in parser._mutually_exclusive_groups if g.required]
    fill += [x for a in required
             for x in (a.option_strings[-1], str(next(iter(a.choices))) if a.choices
                       else "1" if a.type not in (None, str, Path) else "x")]
    return positionals, required, fill


def run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str, str]:
    try:
        code = cli_main.main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_one_line(code: int, out: str, err: str, want: int, *, as_json: bool = False) -> str:
    text = out if as_json else err
    assert "Traceback" not in out + err, out + err
    assert "internal error" not in out + err, out + err
    assert code == want, (code, out, err)
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    if as_json:
        obj = json.loads(lines[0])
        assert obj["ok"] is False and obj["exit"] == want and obj["message"], obj
        return str(obj["message"])
    assert lines[0].startswith("edge-agent"), lines[0]
    return lines[0]


def test_the_tree_has_every_command() -> None:
    names = {" ".join(p) for p, _ in LEAVES}
    for expected in ("status", "devices", "read", "write", "tail", "buffer", "buffer export",
                     "buffer import", "scan", "check-config", "keys generate", "command sign",
                     "doctor", "provision", "verify", "run"):
        assert expected in names, names


@pytest.mark.parametrize(("path", "parser"), LEAVES, ids=[" ".join(p) for p, _ in LEAVES])
def test_usage_errors_are_one_line(capsys: pytest.CaptureFixture[str], path: tuple[str, ...],
                                   parser: argparse.ArgumentParser) -> None:
    argv = list(path)
    positionals, required, fill = filled(parser)
    msg = assert_one_line(*run(capsys, [*argv, *fill, "--no-such-option"]), EXIT_USAGE)
    assert "--no-such-option" in msg and f"edge-agent {' '.join(path)} --help" in msg
    assert_one_line(*run(capsys, [*argv, *fill, "--no-such-option", "--json"]), EXIT_USAGE,
                    as_json=True)
    if positionals or required:
        msg = assert_one_line(*run(capsys, argv), EXIT_USAGE)
        assert "required" in msg
    for action in parser._actions:
        if not action.option_strings or action.nargs == 0:
            continue
        opt = action.option_strings[-1]
        if action.choices is not None:
            msg = assert_one_line(*run(capsys, [*argv, *fill, opt, "zzz-nothing"]), EXIT_USAGE)
            assert "zzz-nothing" in msg and ("one of" in msg or "did you mean" in msg), msg
        elif action.type not in (None, str, Path) and action.type is not Path:
            msg = assert_one_line(*run(capsys, [*argv, *fill, opt, "not-a-value"]), EXIT_USAGE)
            assert opt in msg and "invalid _" not in msg, msg  # no function name leaks


def test_an_unknown_command_is_suggested(capsys: pytest.CaptureFixture[str]) -> None:
    msg = assert_one_line(*run(capsys, ["stauts"]), EXIT_USAGE)
    assert "did you mean 'status'?" in msg
    msg = assert_one_line(*run(capsys, ["buffer", "exprot", "/tmp"]), EXIT_USAGE)
    assert "did you mean 'export'?" in msg
    msg = assert_one_line(*run(capsys, ["scan", "/dev/null", "--units", "abc"]), EXIT_USAGE)
    assert "'abc' is not a unit range" in msg and "_units" not in msg


DAEMON_COMMANDS = [["status"], ["devices"], ["read", "lamp-01"], ["read", "lamp-01", "power"],
                   ["write", "lamp-01", "dimming", "40", "--yes"], ["tail"],
                   ["tail", "--device", "x"], ["buffer"], ["command", "show", "--recent", "3"],
                   ["config", "show"], ["config", "pin"], ["config", "unpin"]]


@pytest.mark.parametrize("argv", DAEMON_COMMANDS, ids=" ".join)
def test_daemon_stopped(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                        tmp_path: Path, argv: list[str]) -> None:
    monkeypatch.setenv("EDGE_AGENT_SOCKET", str(tmp_path / "control.sock"))
    msg = assert_one_line(*run(capsys, argv), EXIT_NO_DAEMON)
    assert "not running" in msg and str(tmp_path / "control.sock") in msg, msg
    assert "start it" in msg
    assert_one_line(*run(capsys, [*argv, "--json"]), EXIT_NO_DAEMON, as_json=True)


def test_export_with_the_daemon_stopped(capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EDGE_AGENT_SOCKET", str(tmp_path / "control.sock"))
    msg = assert_one_line(*run(capsys, ["buffer", "export", str(tmp_path)]), EXIT_NO_DAEMON)
    assert "not running" in msg
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_read_without_daemon_offers_direct(capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    monkeypatch.setenv("EDGE_AGENT_SOCKET", str(tmp_path / "control.sock"))
    msg = assert_one_line(*run(capsys, ["read", "lamp-01"]), EXIT_NO_DAEMON)
    assert "--direct" in msg


def test_a_mistyped_config_path_is_named(capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch,
                                         tmp_path: Path) -> None:
    monkeypatch.delenv("EDGE_AGENT_SOCKET", raising=False)
    monkeypatch.delenv("EDGE_AGENT_CONFIG", raising=False)
    missing = tmp_path / "agnet.toml"
    for argv in (["status", "-c", str(missing)], ["read", "x", "--direct", "-c", str(missing)]):
        msg = assert_one_line(*run(capsys, argv), EXIT_USAGE)
        assert f"no config file at {missing}" in msg


def test_a_bug_is_one_line_too(capsys: pytest.CaptureFixture[str],
                               monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(args: argparse.Namespace) -> int:
        return 1 // 0

    real = cli_main.build_parser

    def patched(command: str | None = None) -> argparse.ArgumentParser:
        parser = real(command)
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        sub.choices["status"].set_defaults(func=broken)
        return parser

    monkeypatch.setattr(cli_main, "build_parser", patched)
    code, _out, err = run(capsys, ["status"])
    assert code == 1 and err.count("\n") == 1 and "internal error: ZeroDivisionError" in err
    assert "Traceback" not in err
    monkeypatch.setenv("EDGE_AGENT_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        cli_main.main(["status"])


@pytest.mark.timeout(120)
def test_socket_not_permitted() -> None:
    need_root()
    with open_dir() as d:
        path = d / "control.sock"
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            srv.bind(str(path))
            srv.listen(1)
            os.chmod(path, 0o660)
            uid = free_uid()
            for argv in (["status"], ["read", "lamp-01"], ["tail"], ["devices", "--json"]):
                res = run_cli_as(uid, [*argv, "--socket", str(path)])
                as_json = "--json" in argv
                msg = assert_one_line(res.returncode, res.stdout, res.stderr, EXIT_NO_DAEMON,
                                      as_json=as_json)
                assert "not permitted" in msg, msg
                if not as_json:
                    assert "sudo" in res.stderr and "is the daemon running" not in res.stderr
        finally:
            srv.close()


# -- odd VALUES, not only usage errors ---------------------------------------------------------

def numeric_options() -> list[tuple[tuple[str, ...], argparse.ArgumentParser, argparse.Action]]:
    """Every option of the tree that takes a number (its type is one of cli/argtypes.py's)."""
    from edge_agent.cli import argtypes

    mine = {getattr(argtypes, n) for n in dir(argtypes) if callable(getattr(argtypes, n))}
    mine.discard(argtypes.key_value)  # a KEY=VALUE tag, the one type there that is no number
    out = []
    for path, parser in LEAVES:
        for a in parser._actions:
            t = a.type
            if a.option_strings and t is not None and t is not argtypes.key_value and (
                    t in mine or getattr(t, "__module__", "") == argtypes.__name__):
                out.append((path, parser, a))
    return out


NUMERIC = numeric_options()


def test_no_option_takes_a_bare_int_or_float() -> None:
    """int/float let nan, inf, 0 and 10**20 through to whatever divides by or sends them: every
    numeric option goes through a checking type of cli/argtypes.py."""
    bare = [f"{' '.join(p)} {a.option_strings[-1]}" for p, parser in LEAVES
            for a in parser._actions if a.type in (int, float)]
    assert bare == []
    assert len(NUMERIC) >= 20, [f"{' '.join(p)} {a.option_strings[-1]}" for p, _, a in NUMERIC]


NEVER = ["nan", "-nan", "inf", "-inf", "Infinity", "1e400", "-1e400", "١٢", "1_000", "",
         "0x", "1e", "½"]
ODD = ["0", "-0", "-1", "-0.0", "12345678901234567890", str(2**64), "9" * 5000, "1e-320",
       "0.0000001", " 5", "5 ", "0x10"]


def _parse(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, Any, str]:
    parser = cli_main.build_parser(argv[0])
    try:
        args, _ = parser.parse_known_args(argv)
        code = 0
    except SystemExit as exc:
        args, code = None, exc.code if isinstance(exc.code, int) else 1
    return code, args, capsys.readouterr().err


@pytest.mark.parametrize(("path", "parser", "action"), NUMERIC,
                         ids=[f"{' '.join(p)} {a.option_strings[-1]}" for p, _, a in NUMERIC])
def test_numeric_options_check_values(capsys: pytest.CaptureFixture[str],
                                      path: tuple[str, ...], parser: argparse.ArgumentParser,
                                      action: argparse.Action) -> None:
    opt = action.option_strings[-1]
    fill = [x for x in filled(parser)[2] if x != opt]
    for value in NEVER:  # refused, in one line naming the option
        code, _, err = _parse(capsys, [*path, *fill, f"{opt}={value}"])
        msg = assert_one_line(code, "", err, EXIT_USAGE)
        assert opt in msg and "invalid" not in msg, msg
    for value in ODD:  # refused in one line, or a finite value of sane size
        code, args, err = _parse(capsys, [*path, *fill, f"{opt}={value}"])
        if code:
            msg = assert_one_line(code, "", err, EXIT_USAGE)
            assert opt in msg, msg
            continue
        got = getattr(args, action.dest)
        for x in (got if isinstance(got, range) else [got]):
            assert isinstance(x, int | float) and math.isfinite(x) and abs(x) < 2**63, \
                (opt, value, got)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.one_of(st.text(max_size=12), st.floats().map(repr),
                      st.integers(min_value=-2**80, max_value=2**80).map(str)),
       which=st.sampled_from(NUMERIC))
def test_any_text_for_any_numeric_option(capsys: pytest.CaptureFixture[str], text: str,
                                         which: tuple[tuple[str, ...], Any, argparse.Action]
                                         ) -> None:
    path, parser, action = which
    opt = action.option_strings[-1]
    code, args, err = _parse(capsys, [*path, *filled(parser)[2], f"{opt}={text}"])
    assert "Traceback" not in err and "internal error" not in err
    if code:
        assert code == EXIT_USAGE and len(err.strip().splitlines()) == 1, err
    else:
        got = getattr(args, action.dest)
        for x in (got if isinstance(got, range) else [got]):
            assert math.isfinite(x) and abs(x) < 2**63, (opt, text, got)


# argv, what the one line must say: values that once reached a division, an overflow or a
# device (the technician's review of issue 13), refused before any line is opened
VALUES = [
    (["scan", "/dev/null", "--baud", "0"], "--baud: 0: a baud rate lies within"),
    (["scan", "/dev/null", "--baud", "12345678901234567890"], "a baud rate lies within"),
    (["modbus", "read", "/dev/null", "1", "hr", "0", "--baud", "0"], "a baud rate"),
    (["modbus", "write", "pole-01", "1", "hr", "0", "100", "--scale", "0", "--yes"],
     "a scale of 0"),
    (["modbus", "write", "pole-01", "1", "hr", "0", "100", "--scale", "nan", "--yes"],
     "--scale: 'nan': give a finite number"),
    (["modbus", "read", "pole-01", "1", "hr", "0", "--scale", "inf"], "give a finite number"),
    (["modbus", "write", "pole-01", "1", "hr", "0", "1e400", "--type", "float32", "--yes"],
     "'1e400' is not a finite number"),
    (["modbus", "write", "pole-01", "1", "hr", "0", "nan", "--type", "float32", "--yes"],
     "'nan' is not a finite number"),
    (["modbus", "write", "pole-01", "1", "hr", "0", "1e39", "--type", "float32", "--yes"],
     "1e39 does not fit a float32"),
    (["modbus", "write", "pole-01", "1", "hr", "0", "70000", "--yes"],
     "70000 does not fit a uint16"),
    (["modbus", "write", "pole-01", "1", "hr", "0", "7", "--scale", "0.0001", "--yes"],
     "7 / scale 0.0001 = 70000 does not fit a uint16"),
    (["modbus", "write", "pole-01", "1", "hr", "0", "1e300", "--type", "int64", "--yes"],
     "'1e300' is not an int64 value"),
    (["modbus", "write", "pole-01", "1", "hr", "0", "-1", "--type", "uint32", "--yes"],
     "-1 does not fit a uint32"),
    (["modbus", "read", "pole-01", "1", "hr", "-1"], "address: -1: addresses are 0..65535"),
    (["modbus", "read", "pole-01", "1", "hr", "65536"], "addresses are 0..65535"),
    (["modbus", "read", "pole-01", "999", "hr", "0"], "unit: 999: unit ids are 1..247"),
    (["modbus", "read", "pole-01", "1", "hr", "65535", "2"], "runs past 65535"),
    (["profile", "new", "x", "--scan", "bus", "999"], "--scan BUS UNIT: 999: unit ids"),
    (["profile", "new", "x", "--scan", "bus", "0"], "broadcast"),
    (["scan", "/dev/null", "--units", "٣"], "is not a unit range"),
    (["scan", "/dev/null", "--timeout", "1e400"], "give a finite number"),
]


@pytest.mark.parametrize(("argv", "says"), VALUES, ids=[" ".join(a) for a, _ in VALUES])
def test_odd_values_are_one_line(capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                 argv: list[str], says: str) -> None:
    monkeypatch.setenv("EDGE_AGENT_SOCKET", str(tmp_path / "control.sock"))
    monkeypatch.setenv("EDGE_AGENT_CONFIG", str(tmp_path / "none.toml"))
    msg = assert_one_line(*run(capsys, argv), EXIT_USAGE)
    assert says in msg, msg


def test_tail_count_zero_is_refused_not_followed_forever(capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    """`tail --count 0` used to mean "follow forever" (the default); now N >= 1, said at once."""
    code, out, err = run(capsys, ["tail", "--count", "0"])
    msg = assert_one_line(code, out, err, EXIT_USAGE)
    assert "--count" in msg and "1.." in msg, msg


def test_json_errors_carry_codes_not_class_names(capsys: pytest.CaptureFixture[str],
                                                 tmp_path: Path) -> None:
    """`buffer import ... --json` used to answer "error": "UplinkError" with an empty hint."""
    from edge_agent.cli.failure import snake

    code, out, err = run(capsys, ["buffer", "import", str(tmp_path / "none"), "--broker",
                                  "127.0.0.1:1", "--json"])
    assert_one_line(code, out, err, 1, as_json=True)
    obj = json.loads(out)
    assert obj["error"] == "import_failed" and obj["hint"], obj
    assert snake("OutboxError") == "outbox_error" and snake("unknown_device") == "unknown_device"


def test_an_empty_config_variable_is_unset_and_check_config_takes_c(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    """`EDGE_AGENT_CONFIG=` used to be the config "." ("does not load (Is a directory)");
    check-config takes -c like every other command."""
    monkeypatch.setenv("EDGE_AGENT_CONFIG", "")
    monkeypatch.setenv("EDGE_AGENT_SOCKET", str(tmp_path / "none.sock"))
    code, out, err = run(capsys, ["status"])
    msg = assert_one_line(code, out, err, EXIT_NO_DAEMON)
    assert "daemon is not running" in msg and "Is a directory" not in msg, msg
    code, out, err = run(capsys, ["check-config", "-c", str(tmp_path / "nope.toml")])
    msg = assert_one_line(code, out, err, EXIT_USAGE)
    assert f"no config file at {tmp_path / 'nope.toml'}" in msg, msg
    (tmp_path / "p.toml").write_text("x = 1\n")
    code, out, err = run(capsys, ["check-config", str(tmp_path / "p.toml"), "-c",
                                  str(tmp_path / "q.toml")])
    assert code == EXIT_USAGE and "two configs named" in err, err
