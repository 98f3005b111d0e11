"""The verifier's state in SQLite: resuming across restarts, conflicts however old, reports that
change nothing, and every lookup indexed (checked with EXPLAIN QUERY PLAN, not with a clock)."""

from __future__ import annotations

import os
import random
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.trust.batch import BatchSigner, ChainHead, SignedBatch
from edge_agent.trust.verify import ChainVerifier, VerifyReport
from edge_agent.trust.verify_state import StateInUse, VerifyState, lock_path
from tests.trust.helpers import BOOT, GATEWAY, T0, build_chain, fixed_key, keyring, make_readings

SIGNER = BatchSigner(fixed_key(0), GATEWAY, BOOT)
KEYS = keyring(fixed_key(0), fixed_key(1))


def _gap(after: SignedBatch, first: int, last: int) -> SignedBatch:
    return SIGNER.sign_gap(
        BatchSigner.next_head(after), first_seq=first, last_seq=last, readings=4,
        t_first_ns=T0, t_last_ns=T0, reason="outbox_full", created_ns=T0, clock_synced=True,
    )  # fmt: skip


def _twin(chain: list[SignedBatch], seq: int) -> SignedBatch:
    prev = chain[seq - 2].digest if seq > 1 else bytes(32)
    return SIGNER.sign_readings(ChainHead(seq - 1, prev), make_readings(1, start=999),
                                created_ns=T0, clock_synced=True)  # fmt: skip


def _report(msgs: list[bytes], path: Path | None = None, window: int = 16) -> VerifyReport:
    state = VerifyState(path)
    try:
        v = ChainVerifier(KEYS, window=window, state=state)
        v.feed_many(msgs)
        return v.summary()
    finally:
        state.close()


def test_resumes_across_restarts_with_the_same_verdict(tmp_path: Path) -> None:
    chain = build_chain(SIGNER, 60)
    notice = _gap(chain[-1], 20, 22)
    tail = build_chain(SIGNER, 5, head=BatchSigner.next_head(notice))
    msgs = [b.cose for b in chain if not 20 <= b.seq <= 22 and b.seq != 40]
    msgs += [notice.cose] + [b.cose for b in tail] + [chain[5].cose]  # one duplicate
    random.Random(5).shuffle(msgs)
    one_shot = _report(msgs)
    path = tmp_path / "verify.db"
    for part in (msgs[:17], msgs[17:40], msgs[40:]):  # three runs, each a fresh process state
        state = VerifyState(path)
        v = ChainVerifier(KEYS, window=16, state=state)
        v.feed_many(part)
        v.commit()
        state.close()
    resumed = _report([], path)
    assert resumed == one_shot
    assert (resumed.gaps_explained, resumed.gaps_unexplained, resumed.duplicates) == (3, 1, 1)
    assert resumed.unexplained == ((GATEWAY, 40, 40),)
    r = _report([chain[39].cose], path)  # seq 40 after all, in a fourth run
    assert r.ok and (r.late, r.gaps_unexplained, r.links_unchecked) == (resumed.late + 1, 0, 1)


def test_a_conflict_is_found_however_old_the_first_copy(tmp_path: Path) -> None:
    chain = build_chain(SIGNER, 5000, per_batch=1)
    state = VerifyState(tmp_path / "v.db")
    v = ChainVerifier(KEYS, state=state)
    v.feed_many(b.cose for b in chain)
    v.commit()
    assert v.feed(_twin(chain, 3).cose).verdict == "conflict"  # type: ignore[union-attr]
    assert v.feed(chain[2].cose).verdict == "duplicate"  # type: ignore[union-attr]
    r = v.summary()
    assert (r.conflicts, r.duplicates, r.batches, r.late) == (1, 1, 5000, 0)
    assert not r.ok and any("conflict" in p and "seq=3:" in p for p in r.problems)
    assert len(v._chains[GATEWAY].pending) == 0  # memory: nothing kept per linked batch
    state.close()


def test_pins_survive_a_restart(tmp_path: Path) -> None:
    chain = build_chain(SIGNER, 3)
    impostor = build_chain(BatchSigner(fixed_key(1), GATEWAY, BOOT), 4)
    path = tmp_path / "v.db"
    _report([b.cose for b in chain], path)
    state = VerifyState(path)
    v2 = ChainVerifier(KEYS, state=state)
    assert v2.feed(impostor[3].cose) is None  # a valid key, but not the one this gateway uses
    r = v2.summary()
    state.close()
    assert r.forged == 1 and any("signs with kid" in p for p in r.problems)


def test_a_report_changes_nothing() -> None:
    chain = build_chain(SIGNER, 10)
    v = ChainVerifier(KEYS, window=64)
    v.feed_many(b.cose for b in chain if b.seq != 4)
    mid = v.summary()
    assert mid.unexplained == ((GATEWAY, 4, 4),) and mid.gaps_unexplained == 1
    v.feed(chain[3].cose)  # arrives after the report: not late, the window still waited for it
    r = v.summary()
    assert r.ok and (r.late, r.links_checked, r.links_unchecked) == (0, 10, 0)


def test_a_notice_arriving_after_the_gap_explains_it() -> None:
    chain = build_chain(SIGNER, 30)
    notice = _gap(chain[-1], 5, 9)
    msgs = [b.cose for b in chain if not 5 <= b.seq <= 9] + [notice.cose]
    r = _report(msgs, window=2)  # the hole is given up long before the notice comes
    assert r.ok and (r.gaps_explained, r.gaps_unexplained) == (5, 0)


def test_every_lookup_is_indexed(tmp_path: Path) -> None:
    chain = build_chain(SIGNER, 400, per_batch=1)
    gaps = [_gap(chain[-1], 100, 120)]
    msgs = [b.cose for b in chain if b.seq % 7 and not 100 <= b.seq <= 120] + [gaps[0].cose]
    msgs += [chain[13].cose, _twin(chain, 50).cose]  # late fill-in, conflict
    random.Random(1).shuffle(msgs)
    state = VerifyState(tmp_path / "v.db")
    statements: set[str] = set()
    state._db.set_trace_callback(statements.add)
    v = ChainVerifier(KEYS, window=8, state=state)
    v.feed_many(msgs)
    v.commit()
    v.summary()
    state._db.set_trace_callback(None)
    state.close()
    probe = sqlite3.connect(tmp_path / "v.db")
    scans = []
    for sql in statements:
        if not sql.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE", "INSERT")):
            continue
        plan = probe.execute(f"EXPLAIN QUERY PLAN {sql}").fetchall()
        scans += [(sql, row[3]) for row in plan if "SCAN" in row[3]
                  and any(t in row[3] for t in ("seen", "claims", "missing"))
                  # the report lists the first unexplained ranges: a LIMITed walk of the index
                  # that holds only those
                  and "USING INDEX missing_open" not in row[3]]
    probe.close()
    assert scans == []
    assert any("FROM seen" in s for s in statements) and any("FROM claims" in s for s in statements)


def test_one_process_per_state_file(tmp_path: Path) -> None:
    """Two archivers on one state would take the MQTT session from each other and call each
    other's batches gaps: the second is refused at once, naming the holder's pid; closing (or the
    holder's death, even by kill -9) frees the state."""
    path = tmp_path / "v.db"
    first = VerifyState(path)
    with pytest.raises(StateInUse, match=rf"{path}: in use by another edge-agent verify "
                                         rf"\(pid {os.getpid()}\)") as info:
        VerifyState(path)
    assert info.value.pid == os.getpid()
    first.close()
    VerifyState(path).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; "
         "from edge_agent.trust.verify_state import VerifyState; "
         f"VerifyState(Path({str(path)!r})); print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(StateInUse) as info:
            VerifyState(path)
        assert info.value.pid == holder.pid
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
    assert lock_path(path).exists()  # left in place: removing it would race a new holder
    VerifyState(path).close()  # the dead holder's lock went with it
