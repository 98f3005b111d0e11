"""kill -9 a process in the middle of outbox writes, many times, then check what survived."""

from __future__ import annotations

import hashlib
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edge_agent.outbox.store import Outbox
from edge_agent.trust.batch import GENESIS_PREV, decode_payload
from edge_agent.trust.cose import verify1
from edge_agent.trust.keys import kid_of, load_signing_key

ROOT = Path(__file__).resolve().parents[2]
CYCLES = 8


def _run_and_kill(db: Path, key: Path, boot: str, rng: random.Random) -> list[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.outbox.writer_child", str(db), str(key), boot],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines: list[str] = []
    assert proc.stdout is not None
    first = proc.stdout.readline()
    assert first.strip() == "ready", first

    def reader() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.strip())

    t = threading.Thread(target=reader)
    t.start()
    time.sleep(rng.uniform(0.05, 0.4))
    proc.kill()
    proc.wait(10)
    t.join(10)
    proc.stdout.close()
    return lines


@pytest.mark.timeout(60)
def test_kill_9_mid_writes_loses_no_committed_batch(tmp_path: Path, key_path: Path) -> None:
    db = tmp_path / "outbox.db"
    rng = random.Random(1234)
    committed: list[int] = []
    maybe_acked: set[int] = set()
    for cycle in range(CYCLES):
        lines = _run_and_kill(db, key_path, f"boot-{cycle}", rng)
        seqs = [int(x.split()[1]) for x in lines if x.startswith("commit ")]
        assert seqs, f"cycle {cycle}: child committed nothing"
        # seq never goes back or repeats across restarts and crashes
        assert not committed or seqs[0] > committed[-1]
        assert seqs == sorted(set(seqs))
        committed.extend(seqs)
        for x in lines:
            if x.startswith("acking"):
                maybe_acked.update(int(s) for s in x.split()[1:])
        with Outbox(db, cap_bytes=1 << 30) as box:
            present = {b.seq: b for b in box.pending(0, 1_000_000)}
            assert box.head.seq >= committed[-1]
            top = box.head.seq
        # every committed (group-final) seq not possibly acked is still there
        lost = [s for s in committed if s not in present and s not in maybe_acked]
        assert not lost, f"cycle {cycle}: committed but missing after kill -9: {lost[:10]}"
        assert max(present, default=0) <= top
    # the chain over everything still stored links and verifies
    pub = load_signing_key(key_path).public_key()
    keys = {kid_of(pub): pub}
    with Outbox(db, cap_bytes=1 << 30) as box:
        rows = box.pending(0, 1_000_000)
    digests = {r.seq: hashlib.sha256(r.cose).digest() for r in rows}
    checked = 0
    for r in rows:
        _, payload = verify1(r.cose, keys)
        p = decode_payload(payload)
        assert p.seq == r.seq
        if r.seq == 1:
            assert p.prev == GENESIS_PREV
        elif r.seq - 1 in digests:
            assert p.prev == digests[r.seq - 1], f"broken chain at seq {r.seq}"
            checked += 1
    assert checked > len(rows) // 2
