"""Secure by default: plaintext MQTT to a remote broker needs ``insecure_plaintext = true`` (and is
then reported), and the files the agent trusts are refused when others can change them (or read
them, for secrets) — with the file, its mode/owner and the fix. Real files at real modes; the fix a
refusal prints is run as printed and must make the config load."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pwd
import re
import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.cli.main import main
from edge_agent.config import permissions
from edge_agent.config.load import load_config
from edge_agent.config.permissions import Kind, file_problem
from edge_agent.errors import CommandRefused, ConfigError, KeyFileError, Problem
from edge_agent.trust.keys import generate_signing_key, load_signing_key, public_pem
from tests.config.conftest import EXAMPLE, PROFILES, Doc, Writer, paths, problems

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
NOBODY = 65534


def fix_of(problem: Problem) -> str:
    found = re.search(r"fix: (.+)$", problem.message)
    assert found, f"no fix in {problem}"
    return found.group(1)


def apply_fix(problem: Problem) -> None:
    """Run the printed fix exactly as a technician would paste it."""
    subprocess.run(["sh", "-c", fix_of(problem)], check=True, timeout=10)


# -- plaintext MQTT ------------------------------------------------------------------------------


def test_plaintext_to_a_remote_broker_is_refused_with_what_to_add(
        write: Writer, config: Doc, capsys: pytest.CaptureFixture[str]) -> None:
    config["uplink"] = {"host": "mqtt.city.example"}
    path = write("agent.toml", config)
    found = problems(lambda: load_config(path))
    assert paths(found) == ["uplink.tls"] and found[0].file == str(path)
    assert "mqtt.city.example:1883" in found[0].message and "in clear" in found[0].message
    assert "[uplink.tls]" in found[0].hint and "insecure_plaintext = true" in found[0].hint
    assert main(["check-config", str(path)]) == 1
    out = capsys.readouterr().out
    assert "config ok" not in out and f"{path}: uplink.tls: required" in out


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.53", "localhost", "::1"])
def test_plaintext_to_loopback_needs_no_waiver(write: Writer, config: Doc, host: str) -> None:
    config["uplink"] = {"host": host}
    cfg = load_config(write("agent.toml", config))
    assert cfg.uplink is not None and not cfg.uplink.plaintext_remote and cfg.warnings == ()


def test_insecure_plaintext_is_accepted_but_reported(
        write: Writer, config: Doc, capsys: pytest.CaptureFixture[str]) -> None:
    config["uplink"] = {"host": "10.20.0.9", "insecure_plaintext": True}
    path = write("agent.toml", config)
    cfg = load_config(path)
    assert cfg.uplink is not None and cfg.uplink.insecure_plaintext
    assert [w.path for w in cfg.warnings] == ["uplink.insecure_plaintext"]
    assert main(["check-config", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("config ok") and lines[1].startswith("WARNING:")
    assert "plaintext MQTT to 10.20.0.9:1883" in lines[1] and str(path) in lines[1]
    assert any(x.startswith("uplink:") and "PLAINTEXT" in x for x in lines)
    assert main(["check-config", "--json", str(path)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert len(doc["warnings"]) == 1 and "insecure_plaintext" in doc["warnings"][0]


def test_insecure_plaintext_with_tls_is_a_contradiction(write: Writer, config: Doc,
                                                        tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("x")
    config["uplink"] = {"host": "mqtt.city.example", "insecure_plaintext": True,
                        "tls": {"ca_file": "ca.pem"}}
    found = problems(lambda: load_config(write("agent.toml", config)))
    assert paths(found) == ["uplink.insecure_plaintext"] and "contradicts" in found[0].message


def test_shipped_example_and_docs_ask_for_tls() -> None:
    cfg = load_config(EXAMPLE)
    assert cfg.uplink is not None and cfg.uplink.tls is not None and cfg.warnings == ()


def test_daemon_refuses_to_start_on_plaintext_and_logs_the_waiver(
        write: Writer, config: Doc, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config["uplink"] = {"host": "mqtt.city.example"}
    path = write("agent.toml", config)
    run = subprocess.run([sys.executable, "-m", "edge_agent.cli.main", "run", "--config",
                          str(path)], capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 2 and "config_invalid" in run.stderr
    assert "uplink.tls: required" in run.stderr
    # with the waiver it starts, and says so once at start
    config["uplink"]["insecure_plaintext"] = True
    write("agent.toml", config)
    (tmp_path / "keys").mkdir()
    generate_signing_key(tmp_path / "keys" / "signing.key")
    from edge_agent.service.daemon import Agent

    with caplog.at_level(logging.WARNING, logger="edge_agent"):
        agent = Agent(path)
    try:
        warned = [r.getMessage() for r in caplog.records if "config_warning" in r.getMessage()]
        assert len(warned) == 1 and "uplink.insecure_plaintext" in warned[0]
    finally:
        agent.batcher.close()
        agent.outbox.close()


# -- file permissions ------------------------------------------------------------------------------


def _gateway(tmp_path: Path, write: Writer, config: Doc, *, tls: bool = True) -> Path:
    """A config using every checked file, all at the modes provisioning lays down."""
    ops = tmp_path / "operators"
    ops.mkdir(mode=0o755)
    profiles = tmp_path / "profiles"
    profiles.mkdir(mode=0o755)
    for shipped in PROFILES.glob("*.toml"):
        (profiles / shipped.name).write_bytes(shipped.read_bytes())
        os.chmod(profiles / shipped.name, 0o644)
    config["profiles_dir"] = "profiles"
    (tmp_path / "keys").mkdir(mode=0o700)
    generate_signing_key(tmp_path / "keys" / "signing.key")
    (ops / "alice.pem").write_bytes(public_pem(generate_signing_key(tmp_path / "alice.key")))
    (ops / "README").write_text("not a key: not loaded, not checked\n")
    config["keys"]["command_keys"] = "operators"
    if tls:
        for name, mode in (("ca.pem", 0o644), ("client.pem", 0o644), ("client.key", 0o600),
                           ("mqtt.pass", 0o600)):
            (tmp_path / name).write_text("x\n")
            os.chmod(tmp_path / name, mode)
        config["uplink"] = {"host": "mqtt.city.example", "username": "gw",
                            "password_file": "mqtt.pass",
                            "tls": {"ca_file": "ca.pem", "cert_file": "client.pem",
                                    "key_file": "client.key"}}
    path = write("agent.toml", config)
    os.chmod(path, 0o640)
    return path


@pytest.mark.parametrize(("rel", "mode", "key_path", "fix"), [
    ("agent.toml", 0o666, "", "chmod go-w"),
    ("agent.toml", 0o664, "", "chmod go-w"),
    ("operators", 0o777, "keys.command_keys", "chmod go-w"),
    ("operators/alice.pem", 0o666, "keys.command_keys", "chmod go-w"),
    ("ca.pem", 0o646, "uplink.tls.ca_file", "chmod go-w"),
    ("client.pem", 0o664, "uplink.tls.cert_file", "chmod go-w"),
    ("client.key", 0o644, "uplink.tls.key_file", "chmod 600"),
    ("client.key", 0o604, "uplink.tls.key_file", "chmod 600"),
    ("mqtt.pass", 0o640, "uplink.password_file", "chmod 600"),
    ("keys/signing.key", 0o666, "keys.signing_key", "chmod 600"),
    ("keys/signing.key", 0o640, "keys.signing_key", "chmod 600"),
    ("profiles", 0o777, "profiles_dir", "chmod go-w"),
    ("profiles/street_lamp.toml", 0o666, "profiles_dir", "chmod go-w"),
    ("profiles/water_meter.toml", 0o664, "profiles_dir", "chmod go-w"),
    # a directory holding a trusted file: whoever may write it can swap the file by a rename
    (".", 0o777, "", "chmod go-w"),
    (".", 0o775, "", "chmod go-w"),
    ("keys", 0o777, "keys.signing_key", "chmod go-w"),
])
def test_file_open_to_others_is_refused_and_the_fix_works(
        tmp_path: Path, write: Writer, config: Doc, rel: str, mode: int, key_path: str,
        fix: str) -> None:
    path = _gateway(tmp_path, write, config)
    load_config(path)  # as provisioned: fine
    target = Path(os.path.normpath(tmp_path / rel))
    os.chmod(target, mode)
    found = problems(lambda: load_config(path))
    assert paths(found) == [key_path], "\n".join(map(str, found))
    p = found[0]
    assert p.file == str(path)
    assert str(target) in p.message and f"mode {mode:04o}" in p.message
    assert f"owner {pwd.getpwuid(os.geteuid()).pw_name}:" in p.message
    assert fix_of(p) == f"{fix} {target}"
    apply_fix(p)
    load_config(path)


@ROOT_ONLY
@pytest.mark.parametrize(("rel", "key_path", "owner"), [
    ("agent.toml", "", "root"),
    ("operators", "keys.command_keys", "root"),
    ("operators/alice.pem", "keys.command_keys", "root"),
    ("ca.pem", "uplink.tls.ca_file", "root"),
    ("client.key", "uplink.tls.key_file", "root"),  # no edge-agent account: whoever runs it
])
def test_file_owned_by_another_user_is_refused_and_the_fix_works(
        tmp_path: Path, write: Writer, config: Doc, rel: str, key_path: str, owner: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(permissions, "SERVICE_USER", "edge-agent-absent")
    path = _gateway(tmp_path, write, config)
    target = tmp_path / rel
    os.chown(target, NOBODY, -1)
    found = problems(lambda: load_config(path))
    assert paths(found) == [key_path], "\n".join(map(str, found))
    assert "is owned by" in found[0].message and str(target) in found[0].message
    assert fix_of(found[0]) == f"chown {owner} {target}"
    apply_fix(found[0])
    load_config(path)


def test_a_sticky_directory_is_no_hole(tmp_path: Path, write: Writer, config: Doc) -> None:
    """/tmp's rule: in a 1777 directory others may add names but not rename or remove a name they
    do not own, so the files the agent trusts stay in place (this is where pytest's tmp_path and
    every test gateway live)."""
    path = _gateway(tmp_path, write, config)
    for d in (tmp_path, tmp_path / "keys", tmp_path / "profiles" / ".."):
        os.chmod(d, 0o1777)
    load_config(path)
    os.chmod(tmp_path, 0o777)  # the same without the sticky bit
    found = problems(lambda: load_config(path))
    assert paths(found) == [""] and f"directory {tmp_path} holding config file" in \
        found[0].message and "rename" in found[0].message


def test_a_writable_directory_far_up_is_found_once(tmp_path: Path, write: Writer,
                                                   config: Doc) -> None:
    """The walk goes up to /: a 0777 grand-parent opens every file below it, reported once at
    the first key path that reaches it, with a fix that makes the config load."""
    top = tmp_path / "site"
    gw = top / "gw"
    gw.mkdir(parents=True)
    path = _gateway(gw, write_into(gw), config)
    os.chmod(top, 0o777)
    found = problems(lambda: load_config(path))
    assert paths(found) == [""], "\n".join(map(str, found))
    assert f"directory {top} holding config file {path}" in found[0].message
    assert fix_of(found[0]) == f"chmod go-w {top}"
    apply_fix(found[0])
    load_config(path)


def write_into(directory: Path) -> Writer:
    from tests.config.tomlw import dumps

    def write(name: str, doc: Doc) -> Path:
        p = directory / name
        p.write_text(dumps(doc))
        return p
    return write


@ROOT_ONLY
def test_a_directory_or_link_on_the_way_owned_by_another_user_is_refused(
        tmp_path: Path, write: Writer, config: Doc, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(permissions, "SERVICE_USER", "edge-agent-absent")
    real = tmp_path / "real"
    real.mkdir()
    path = _gateway(real, write_into(real), config)
    os.chown(real, NOBODY, -1)
    found = problems(lambda: load_config(path))
    assert paths(found) == [""] and fix_of(found[0]) == f"chown root {real}"
    apply_fix(found[0])
    load_config(path)
    link = tmp_path / "etc"
    link.symlink_to(real)
    os.chown(link, NOBODY, NOBODY, follow_symlinks=False)
    found = problems(lambda: load_config(link / "agent.toml"))
    assert [p.path for p in found] == [""] and f"symbolic link {link}" in found[0].message
    apply_fix(found[0])
    load_config(link / "agent.toml")


def test_check_config_refuses_a_signing_key_others_can_read(
        tmp_path: Path, write: Writer, config: Doc, capsys: pytest.CaptureFixture[str]) -> None:
    """The daemon, doctor and `keys show` refuse it: check-config says so before them."""
    path = _gateway(tmp_path, write, config, tls=False)
    assert main(["check-config", str(path)]) == 0
    capsys.readouterr()
    os.chmod(tmp_path / "keys" / "signing.key", 0o666)
    assert main(["check-config", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"keys.signing_key: signing key {tmp_path / 'keys' / 'signing.key'} is accessible " \
           "by group and others" in out


@ROOT_ONLY
def test_a_signing_key_the_technician_cannot_see_is_noted_not_refused() -> None:
    """check-config as a user outside the service's state directory (0700): the key's rules are
    checked by whoever can load it; the technician is told they were not checked here."""
    from tests.config.conftest import CONFIG
    from tests.config.tomlw import dumps
    from tests.e2e.technician import free_uid, open_dir, run_cli_as

    with open_dir() as base:
        profiles = base / "profiles"
        profiles.mkdir(mode=0o755)
        for shipped in PROFILES.glob("*.toml"):
            (profiles / shipped.name).write_bytes(shipped.read_bytes())
            os.chmod(profiles / shipped.name, 0o644)
        (base / "keys").mkdir(mode=0o700)
        generate_signing_key(base / "keys" / "signing.key")
        (base / "agent.toml").write_text(dumps(dict(CONFIG, profiles_dir="profiles")))
        os.chmod(base / "agent.toml", 0o644)
        uid = free_uid()
        run = run_cli_as(uid, ["check-config", str(base / "agent.toml")])
        assert run.returncode == 0, run.stdout + run.stderr
        assert "WARNING:" in run.stdout and "keys.signing_key" in run.stdout
        assert f"not visible to {uid}" in run.stdout


def test_every_problem_at_once(tmp_path: Path, write: Writer, config: Doc) -> None:
    path = _gateway(tmp_path, write, config)
    os.chmod(tmp_path / "operators", 0o777)
    os.chmod(tmp_path / "operators" / "alice.pem", 0o666)
    os.chmod(tmp_path / "client.key", 0o644)
    found = problems(lambda: load_config(path))
    assert sorted(paths(found)) == ["keys.command_keys", "keys.command_keys",
                                    "uplink.tls.key_file"]


@ROOT_ONLY
def test_service_user_and_group(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a service account (here the stock ``daemon`` user/group stands in for edge-agent):
    it may own any file, and its group may read a secret (root:edge-agent 0640) but never write
    it; any other group may not even read it."""
    import grp

    monkeypatch.setattr(permissions, "SERVICE_USER", "daemon")
    uid, gid = pwd.getpwnam("daemon").pw_uid, grp.getgrnam("daemon").gr_gid
    key = tmp_path / "client.key"
    key.write_text("x")
    os.chmod(key, 0o600)
    os.chown(key, uid, gid)
    assert file_problem(key, Kind.SECRET) is None
    os.chown(key, 0, gid)
    os.chmod(key, 0o640)
    assert file_problem(key, Kind.SECRET) is None
    os.chmod(key, 0o660)
    why = file_problem(key, Kind.SECRET)
    assert why is not None and why.endswith(f"fix: chmod 640 {key}")
    os.chown(key, 0, 0)
    os.chmod(key, 0o640)
    why = file_problem(key, Kind.SECRET)
    assert why is not None and why.endswith(f"fix: chmod 600 {key}")
    os.chown(key, NOBODY, gid)
    os.chmod(key, 0o600)
    why = file_problem(key, Kind.SECRET)
    assert why is not None and why.endswith(f"fix: chown daemon {key}")


def test_signing_key_uses_the_same_rules(tmp_path: Path) -> None:
    key = tmp_path / "signing.key"
    generate_signing_key(key)
    os.chmod(key, 0o660)
    with pytest.raises(KeyFileError, match=rf"signing key {key} is accessible by group "
                                           rf"\(mode 0660.*fix: chmod 600 {key}$"):
        load_signing_key(key)


def test_reload_is_refused_when_an_operator_key_becomes_writable(
        tmp_path: Path, write: Writer, config: Doc) -> None:
    path = _gateway(tmp_path, write, config, tls=False)
    from edge_agent.service.daemon import Agent

    agent = Agent(path)
    try:
        os.chmod(tmp_path / "operators" / "alice.pem", 0o666)
        with pytest.raises(CommandRefused, match=r"keys\.command_keys: operator key .*alice\.pem "
                                                 r"is writable by group and others"):
            asyncio.run(agent.reload())
        os.chmod(tmp_path / "operators", 0o777)
        with pytest.raises(ConfigError, match="operator key directory"):
            Agent(path)  # and a (re)start refuses it the same way
    finally:
        agent.batcher.close()
        agent.outbox.close()


def test_missing_operator_directory_is_not_a_permission_problem(write: Writer,
                                                                config: Doc) -> None:
    config["keys"]["command_keys"] = "no-such-dir"
    load_config(write("agent.toml", config))


def test_what_provision_lays_down_passes(tmp_path: Path) -> None:
    """`edge-agent provision` (as the install docs run it), then the technician adds a bus and a
    device and a TLS uplink: check-config is happy with every file provision made."""
    conf, state = tmp_path / "etc" / "edge-agent", tmp_path / "var" / "lib" / "edge-agent"
    cli = [sys.executable, "-m", "edge_agent.cli.main"]
    prov = subprocess.run([*cli, "provision", "--gateway-id", "gw-prov", "--config-dir", str(conf),
                           "--state-dir", str(state), "--runtime-dir", str(tmp_path / "run"),
                           "--profiles-dir", str(EXAMPLE.parents[1])],
                          capture_output=True, text=True, timeout=60, check=False)
    assert prov.returncode == 0, prov.stderr
    (conf / "operators" / "alice.pem").write_bytes(
        public_pem(generate_signing_key(tmp_path / "alice.key")))
    ca = conf / "ca.pem"
    ca.write_text("x\n")
    text = (conf / "agent.toml").read_text().replace("[outbox]", """[[buses]]
name = "rs485-1"
kind = "rtu"
port = "/dev/ttyUSB0"

[[devices]]
name = "meter-1"
profile = "water_meter"
bus = "rs485-1"
unit_id = 1

[uplink]
host = "mqtt.example.city"
[uplink.tls]
ca_file = "ca.pem"

[outbox]""")
    (conf / "agent.toml").write_text(text)
    check = subprocess.run([*cli, "check-config", str(conf / "agent.toml")], capture_output=True,
                           text=True, timeout=60, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "WARNING" not in check.stdout
    load_signing_key(state / "keys" / "signing.key")
