"""Durable command results, the replay store failing for real, and the audit line of every decision
(CommandService with the real verifier, stores on real SQLite files)."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.commands.audit import CommandService
from edge_agent.commands.execute import CommandExecutor
from edge_agent.commands.model import Action, Command, Result, decode_result, encode_command
from edge_agent.commands.replay import ReplayGuard
from edge_agent.commands.results import ResultStore
from edge_agent.commands.verify import CommandVerifier
from edge_agent.config.model import AgentConfig
from edge_agent.errors import CommandRefused, CommandStoreError
from edge_agent.readings import Value
from edge_agent.trust.cose import sign1, verify1
from edge_agent.trust.keys import kid_of

from .conftest import NOW


def corrupt(db: Path) -> None:
    """Overwrite a SQLite file and its WAL/shm in place, as a failing card would."""
    for f in db.parent.glob(db.name + "*"):
        size = f.stat().st_size
        with open(f, "r+b") as fh:
            fh.write(os.urandom(size))


def result(n: int, t_ns: int = NOW * 10**9) -> Result:
    return Result(n.to_bytes(16, "big"), "gw-test", n % 2 == 0, "" if n % 2 == 0 else "expired",
                  t_ns, b"k" * 16, n if n % 2 == 0 else None)


def test_results_survive_a_restart_until_acknowledged(tmp_path: Path) -> None:
    path = tmp_path / "command_results.db"
    store = ResultStore(path)
    keys = [store.add(result(i), f"cose-{i}".encode()) for i in range(4)]
    store.acked(keys[1])
    store.close()
    again = ResultStore(path)  # a restart
    try:
        assert again.unacked() == [(keys[i], f"cose-{i}".encode()) for i in (0, 2, 3)]
        again.acked(keys[0])
        again.acked(keys[0])  # a duplicate PUBACK is harmless
        assert [k for k, _ in again.unacked()] == [keys[2], keys[3]]
    finally:
        again.close()


def test_results_are_bounded_by_count_and_age(tmp_path: Path) -> None:
    now = [float(NOW)]
    store = ResultStore(tmp_path / "r.db", max_count=5, max_age_s=3600, clock=lambda: now[0])
    try:
        for i in range(8):
            store.add(result(i, int(now[0] * 1e9)), b"x")
        assert len(store.unacked()) == 5  # the newest five, acknowledged or not
        now[0] += 7200
        store.add(result(99, int(now[0] * 1e9)), b"y")
        assert store.unacked() == [(9, b"y")]  # the rest were older than max_age
    finally:
        store.close()


def test_a_store_that_cannot_be_opened_says_which_file(tmp_path: Path) -> None:
    bad = tmp_path / "command_results.db"
    bad.write_bytes(os.urandom(8192))
    with pytest.raises(CommandStoreError, match=r"command_results\.db"):
        ResultStore(bad)


def test_replay_store_failing_at_run_time_refuses_and_recovers(tmp_path: Path) -> None:
    path = tmp_path / "commands.db"
    guard = ReplayGuard(path)
    try:
        guard.admit(b"k", b"id-1", 1, NOW + 60, NOW)
        corrupt(path)
        with pytest.raises(CommandRefused) as info:
            guard.admit(b"k", b"id-2", 2, NOW + 60, NOW)
        assert info.value.reason == "replay_store_unavailable"
        assert "commands.db" in info.value.detail
        for f in tmp_path.glob("commands.db*"):  # the technician replaces the broken file
            f.unlink()
        guard.admit(b"k", b"id-3", 3, NOW + 60, NOW)  # reopened on the next command
        with pytest.raises(CommandRefused) as info:
            guard.admit(b"k", b"id-3", 4, NOW + 60, NOW)
        assert info.value.reason == "replayed_id"
    finally:
        guard.close()


class _IO:
    async def write(self, device: str, point: str, value: Value) -> Value:
        return value

    async def read_now(self, device: str, point: str | None = None) -> dict[str, Value]:
        return {}


@pytest.fixture
def service(tmp_path: Path, config: AgentConfig, operator: Ed25519PrivateKey
            ) -> Iterator[tuple[CommandService, list[bytes]]]:
    guard = ReplayGuard(tmp_path / "commands.db")
    verifier = CommandVerifier({kid_of(operator.public_key()): operator.public_key()}, "gw-test",
                               guard, clock_synced=lambda: True, now=lambda: NOW)
    memory: list[bytes] = []
    gw = Ed25519PrivateKey.generate()
    svc = CommandService(verifier, CommandExecutor(lambda: config, _IO()), gw,
                         kid_of(gw.public_key()), "gw-test", publish_result=memory.append,
                         results=ResultStore(tmp_path / "command_results.db"))
    yield svc, memory
    guard.close()
    assert svc.results is not None
    svc.results.close()


def _send(svc: CommandService, msg: bytes) -> Result:
    return asyncio.run(svc.handle(msg))


def test_every_refusal_after_the_signature_names_the_signer(
        service: tuple[CommandService, list[bytes]], operator: Ed25519PrivateKey,
        caplog: pytest.LogCaptureFixture) -> None:
    svc, memory = service
    kid = kid_of(operator.public_key())
    base = Command(os.urandom(16), NOW - 1, NOW + 300, 1, "gw-test", Action.WRITE, "lamp-01",
                   "dimming", 40)

    def signed(c: Command) -> bytes:
        return sign1(encode_command(c), operator, kid)

    first = signed(base)
    cases = {
        "accepted": first,
        "replayed_id": first,
        "replayed_counter": signed(replace(base, id=os.urandom(16))),
        "expired": signed(replace(base, id=os.urandom(16), ctr=5, iat=NOW - 4000,
                                  exp=NOW - 1000)),
        "wrong_gateway": signed(replace(base, id=os.urandom(16), ctr=6, gateway="gw-other")),
        "unknown_point": signed(replace(base, id=os.urandom(16), ctr=7, point="nope")),
        "out_of_bounds": signed(replace(base, id=os.urandom(16), ctr=8, value=1000)),
        "unknown_device": signed(replace(base, id=os.urandom(16), ctr=9, device="lamp-99")),
        "malformed": sign1(b"\xa1\x01\x02", operator, kid),  # signed, but not a command
    }
    stranger = Ed25519PrivateKey.generate()
    unverified = {
        "unknown_kid": sign1(encode_command(base), stranger, kid_of(stranger.public_key())),
        "bad_signature": first[:-1] + bytes((first[-1] ^ 1,)),
    }
    with caplog.at_level(logging.INFO, logger="edge_agent.audit"):
        for want, msg in {**cases, **unverified}.items():
            res = _send(svc, msg)
            assert (res.reason or "accepted") == want
            assert res.kid == (b"" if want in unverified else kid), want
    lines = [r.getMessage() for r in caplog.records if "command_audit" in r.getMessage()]
    assert len(lines) == len(cases) + len(unverified)
    for line, want in zip(lines, [*cases, *unverified], strict=True):
        assert (f"kid={kid.hex()}" in line) == (want not in unverified), line
        if want not in ("malformed", *unverified):  # the command is known: so is its target
            assert "action=write device=lamp-" in line, line
    # every result stored durably, none from memory; each one signed by the gateway
    assert memory == []
    assert svc.results is not None
    stored = svc.results.recent(50)
    assert [s.result.reason or "accepted" for s in stored] == [*cases, *unverified]
    gkey = {svc.kid: svc.key.public_key()}
    assert all(decode_result(verify1(c, gkey)[1]).gateway == "gw-test"
               for _, c in svc.results.unacked())
    # by id: the accepted one, its replay, and the two unverified copies (best-effort id)
    assert [s.result.reason for s in svc.results.find(base.id)] == [
        "", "replayed_id", "unknown_kid", "bad_signature"]


def test_a_broken_replay_store_still_gives_an_audit_line_and_a_signed_result(
        service: tuple[CommandService, list[bytes]], operator: Ed25519PrivateKey,
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    svc, memory = service
    kid = kid_of(operator.public_key())
    c = Command(os.urandom(16), NOW - 1, NOW + 300, 1, "gw-test", Action.PING)
    corrupt(tmp_path / "commands.db")
    corrupt(tmp_path / "command_results.db")  # and the result store with it
    with caplog.at_level(logging.INFO, logger="edge_agent.audit"):
        res = _send(svc, sign1(encode_command(c), operator, kid))
    assert (res.ok, res.reason, res.kid, res.id) == (False, "replay_store_unavailable", kid, c.id)
    line = next(r.getMessage() for r in caplog.records if "command_audit" in r.getMessage())
    assert f"id={c.id.hex()} kid={kid.hex()}" in line
    assert "reason=replay_store_unavailable" in line
    # the result could not be stored either: published from memory, signed all the same
    (cose,) = memory
    got = decode_result(verify1(cose, {svc.kid: svc.key.public_key()})[1])
    assert got.reason == "replay_store_unavailable" and got.id == c.id
