from __future__ import annotations

import random

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.trust.batch import BatchSigner, ChainHead, SignedBatch
from edge_agent.trust.verify import ChainVerifier, VerifyReport
from tests.trust.helpers import BOOT, GATEWAY, T0, build_chain, fixed_key, keyring, make_readings

SIGNER = BatchSigner(fixed_key(0), GATEWAY, BOOT)
CHAIN = build_chain(SIGNER, 20)  # seqs 1..20, 4 readings each
KEYS = keyring(fixed_key(0))


def _run(msgs: list[bytes], window: int = 256) -> VerifyReport:
    v = ChainVerifier(KEYS, window=window)
    for m in msgs:
        v.feed(m)
    return v.summary()


def _gap(signer: BatchSigner, head_batch: SignedBatch, first: int, last: int) -> SignedBatch:
    head = BatchSigner.next_head(head_batch)
    return signer.sign_gap(
        head, first_seq=first, last_seq=last, readings=4 * (last - first + 1),
        t_first_ns=T0, t_last_ns=T0 + 1, reason="outbox_full", created_ns=T0, clock_synced=True,
    )  # fmt: skip


def test_intact_chain_in_order() -> None:
    r = _run([b.cose for b in CHAIN])
    assert r.ok and r.problems == ()
    assert (r.batches, r.readings, r.links_checked, r.links_unchecked) == (20, 80, 20, 0)
    assert (r.forged, r.broken_chain, r.gaps_unexplained, r.duplicates) == (0, 0, 0, 0)
    assert r.gateways == (GATEWAY,)


def test_reordered_delivery_and_duplicates_are_fine() -> None:
    msgs = [b.cose for b in CHAIN] + [CHAIN[3].cose, CHAIN[3].cose, CHAIN[17].cose]
    random.Random(7).shuffle(msgs)
    r = _run(msgs)
    assert r.ok
    assert (r.batches, r.readings, r.duplicates, r.links_checked) == (20, 80, 3, 20)


def test_missing_batch_is_an_unexplained_gap() -> None:
    r = _run([b.cose for b in CHAIN if b.seq not in (7, 12, 13)])
    assert not r.ok
    assert r.gaps_unexplained == 3 and r.gaps_explained == 0
    assert r.unexplained == ((GATEWAY, 7, 7), (GATEWAY, 12, 13))
    assert r.links_unchecked == 2  # 8 and 14 follow a hole
    assert any("unexplained_gap" in p and "12..13" in p for p in r.problems)


def test_gap_notice_explains_dropped_batches() -> None:
    notice = _gap(SIGNER, CHAIN[-1], 4, 6)
    after = build_chain(SIGNER, 2, head=BatchSigner.next_head(notice))
    msgs = [b.cose for b in CHAIN if not 4 <= b.seq <= 6] + [notice.cose] + [b.cose for b in after]
    r = _run(msgs)
    assert r.ok, r.problems
    assert (r.gaps_explained, r.gaps_unexplained, r.gap_notices) == (3, 0, 1)
    assert (r.readings_dropped, r.batches, r.readings) == (12, 20, 17 * 4 + 8)


def test_gap_notice_covering_only_part_of_the_hole() -> None:
    notice = _gap(SIGNER, CHAIN[-1], 5, 5)
    r = _run([b.cose for b in CHAIN if not 4 <= b.seq <= 6] + [notice.cose])
    assert not r.ok
    assert (r.gaps_explained, r.gaps_unexplained) == (1, 2)
    assert r.unexplained == ((GATEWAY, 4, 4), (GATEWAY, 6, 6))


def test_forged_gap_notice_fails_loudly(other_key: Ed25519PrivateKey) -> None:
    liar = BatchSigner(other_key, GATEWAY, BOOT)  # an unknown key claims the drop
    msgs = [b.cose for b in CHAIN if not 4 <= b.seq <= 6] + [_gap(liar, CHAIN[-1], 4, 6).cose]
    r = _run(msgs)
    assert not r.ok
    assert (r.forged, r.gaps_unexplained, r.gap_notices) == (1, 3, 0)
    assert any("unknown kid" in p for p in r.problems)
    # same kid but a different key: still a bad signature, not an explanation
    impostor = BatchSigner(other_key, GATEWAY, BOOT)
    impostor.kid = SIGNER.kid
    r2 = _run([*msgs[:-1], _gap(impostor, CHAIN[-1], 4, 6).cose])
    assert (r2.forged, r2.gaps_unexplained) == (1, 3)
    assert any("bad signature" in p for p in r2.problems)


def test_tampered_payload_is_forged_and_leaves_a_hole() -> None:
    bad = bytearray(CHAIN[4].cose)
    bad[60] ^= 0x40
    msgs = [b.cose for b in CHAIN]
    msgs[4] = bytes(bad)
    r = _run(msgs)
    assert not r.ok
    assert (r.forged, r.gaps_unexplained, r.unexplained) == (1, 1, ((GATEWAY, 5, 5),))
    assert any("bad signature" in p for p in r.problems)


def test_wrong_key_rejects_everything(other_key: Ed25519PrivateKey) -> None:
    v = ChainVerifier(keyring(other_key))
    for b in CHAIN[:3]:
        assert v.feed(b.cose) is None
    r = v.summary()
    assert (r.forged, r.batches, r.ok) == (3, 0, False)


def test_broken_prev_chain() -> None:
    head = ChainHead(5, b"\x99" * 32)  # seq 6 not chained to seq 5
    rogue = SIGNER.sign_readings(head, make_readings(2), created_ns=T0, clock_synced=True)
    rest = build_chain(SIGNER, 3, head=BatchSigner.next_head(rogue))
    r = _run([b.cose for b in CHAIN[:5]] + [rogue.cose] + [b.cose for b in rest])
    assert not r.ok
    assert (r.broken_chain, r.forged, r.gaps_unexplained) == (1, 0, 0)
    assert any("broken_chain" in p and "seq=6" in p for p in r.problems)


def test_bad_genesis_prev_is_broken() -> None:
    b1 = SIGNER.sign_readings(ChainHead(0, b"\x01" * 32), [], created_ns=T0, clock_synced=True)
    r = _run([b1.cose])
    assert r.broken_chain == 1 and not r.ok


def test_conflicting_batches_for_one_seq() -> None:
    twin = SIGNER.sign_readings(
        ChainHead(5, CHAIN[4].digest), make_readings(1), created_ns=T0, clock_synced=True
    )
    r = _run([b.cose for b in CHAIN] + [twin.cose])
    assert not r.ok
    assert (r.conflicts, r.duplicates, r.batches) == (1, 0, 20)
    assert any("conflict" in p and "seq=6" in p for p in r.problems)


def test_window_overflow_then_late_fill_in() -> None:
    v = ChainVerifier(KEYS, window=4)
    for b in CHAIN:
        if b.seq != 3:
            v.feed(b.cose)
    v.feed(CHAIN[2].cose)  # seq 3 arrives after it was given up
    r = v.summary()
    assert r.ok, r.problems
    assert (r.late, r.batches, r.gaps_unexplained) == (1, 20, 0)
    assert (r.links_checked, r.links_unchecked) == (20, 0)


def test_start_mid_stream_and_two_gateways() -> None:
    other = BatchSigner(fixed_key(1), "gw-other", BOOT)
    other_chain = build_chain(other, 5)
    msgs = [b.cose for b in CHAIN[9:]] + [b.cose for b in other_chain]
    random.Random(3).shuffle(msgs)
    v = ChainVerifier(keyring(fixed_key(0), fixed_key(1)))
    for m in msgs:
        v.feed(m)
    r = v.summary()
    assert r.ok and r.gateways == ("gw-other", GATEWAY)
    assert (r.batches, r.links_checked, r.links_unchecked) == (16, 10 + 5, 1)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_any_delivery_order_gives_the_same_verdict(data: st.DataObject) -> None:
    keep = data.draw(st.lists(st.booleans(), min_size=20, max_size=20))
    present = [b for b, k in zip(CHAIN, keep, strict=True) if k]
    dups = data.draw(st.lists(st.sampled_from(present), max_size=5)) if present else []
    msgs = data.draw(st.permutations([b.cose for b in present + dups]))
    window = data.draw(st.integers(1, 25))
    r = _run(list(msgs), window=window)
    seqs = {b.seq for b in present}
    holes = {s for s in range(min(seqs, default=0), max(seqs, default=0)) if s not in seqs}
    assert (r.batches, r.duplicates, r.gaps_unexplained) == (len(seqs), len(dups), len(holes))
    assert r.broken_chain == r.forged == r.conflicts == 0
    assert r.ok == (not holes)
    assert r.links_checked == sum(1 for s in seqs if s == 1 or s - 1 in seqs)


def test_another_gateways_key_cannot_explain_or_extend_a_chain(
    other_key: Ed25519PrivateKey,
) -> None:
    keys = keyring(fixed_key(0), other_key)
    # gateway B holds a valid key; it forges a gap notice in gateway A's name
    forger = BatchSigner(other_key, GATEWAY, BOOT)
    msgs = [b.cose for b in CHAIN if not 4 <= b.seq <= 6] + [_gap(forger, CHAIN[-1], 4, 6).cose]
    v = ChainVerifier(keys)
    for m in msgs:
        v.feed(m)
    r = v.summary()
    assert not r.ok and (r.forged, r.gaps_unexplained, r.gap_notices) == (1, 3, 0)
    assert any("signs with kid" in p for p in r.problems)
    # with explicit bindings the forgery is refused even when it arrives first
    kid_a, kid_b = SIGNER.kid, forger.kid
    v2 = ChainVerifier(keys, bindings={GATEWAY: [kid_a], "gw-b": [kid_b]})
    assert v2.feed(msgs[-1]) is None
    for m in msgs[:-1]:
        assert v2.feed(m) is not None
    r2 = v2.summary()
    assert (r2.forged, r2.gaps_unexplained) == (1, 3)
    assert any(f"belongs to gateway gw-b, batch claims gateway {GATEWAY}" in p for p in r2.problems)
