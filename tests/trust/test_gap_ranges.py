"""Gap notices naming many ranges (kept alarm batches between them) and carrying what loss notices
announced: the encoding (old single-range form kept for one range), strict decoding, and what the
verifier makes of them."""

from __future__ import annotations

import cbor2
import pytest

from edge_agent.errors import ContractError, VerifyError
from edge_agent.trust.batch import BatchSigner, ChainHead, SignedBatch, decode_payload
from edge_agent.trust.cose import parse1, sign1
from edge_agent.trust.gap import K_FIRST, K_RANGES, K_UNSIGNED, GapNotice, normalize
from edge_agent.trust.keys import kid_of
from edge_agent.trust.verify import ChainVerifier
from tests.trust.helpers import BOOT, GATEWAY, T0, build_chain, fixed_key, keyring

SIGNER = BatchSigner(fixed_key(0), GATEWAY, BOOT)
KEYS = keyring(fixed_key(0))
CHAIN = build_chain(SIGNER, 20)  # seqs 1..20, 4 readings each


def _gap(ranges: list[tuple[int, int]], *, unsigned: int = 0, head: int = 20) -> SignedBatch:
    n = sum(b - a + 1 for a, b in ranges)
    return SIGNER.sign_gap(
        ChainHead(head, CHAIN[head - 1].digest), ranges=ranges, readings=4 * n, unsigned=unsigned,
        t_first_ns=T0, t_last_ns=T0 + 1, reason="outbox_full", created_ns=T0, clock_synced=True,
    )  # fmt: skip


def _map(b: SignedBatch) -> dict[object, object]:
    m: dict[object, object] = cbor2.loads(parse1(b.cose)[2])
    return m


def test_several_ranges_round_trip_as_key_24_and_one_range_keeps_the_old_keys() -> None:
    many = _gap([(2, 4), (6, 6), (9, 12)], unsigned=70)
    m = _map(many)
    assert m[K_RANGES] == [2, 4, 6, 6, 9, 12] and m[K_UNSIGNED] == 70 and K_FIRST not in m
    g = decode_payload(parse1(many.cose)[2]).gap
    assert g == GapNotice(((2, 4), (6, 6), (9, 12)), 32, T0, T0 + 1, "outbox_full", 70)
    assert list(g.seqs()) == [2, 3, 4, 6, 9, 10, 11, 12] and g.count == 8 and not g.covers(5)
    one = _map(_gap([(3, 7)]))
    assert (one[13], one[14]) == (3, 7) and K_RANGES not in one and K_UNSIGNED not in one


@pytest.mark.parametrize(
    "ranges",
    [[(4, 6), (2, 3)], [(2, 4), (5, 6)], [(2, 5), (4, 8)], [(3, 2)], [(0, 2)], [(2, 21)]],
)
def test_ranges_out_of_order_adjacent_overlapping_or_outside_are_refused(
    ranges: list[tuple[int, int]],
) -> None:
    with pytest.raises(ContractError):
        _gap(ranges)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({K_RANGES: [2, 4, 5, 6]}, r"payload\[24\]\[2\]: range 5..6 not ascending"),
        ({K_RANGES: [2, 4, 9]}, r"payload\[24\]: expected a non-empty array"),
        ({K_RANGES: []}, r"payload\[24\]: expected a non-empty array"),
        ({K_RANGES: [2, "x"]}, r"payload\[24\]\[0\]: range bounds must be integers"),
        ({K_RANGES: [2, 21]}, r"payload\[24\]\[0\]: range 2..21 not ascending"),
        ({K_RANGES: [2, 4], K_FIRST: 2}, r"payload\[24\]: ranges and first/last together"),
        ({K_UNSIGNED: 0}, r"payload\[25\]: present only with ranges, and never 0"),
        ({K_UNSIGNED: -3}, r"payload\[25\]: -3 is below 0"),
    ],
)
def test_malformed_ranges_are_refused_naming_the_key(
    edit: dict[object, object], message: str
) -> None:
    m = _map(_gap([(2, 4), (6, 6)], unsigned=5))
    m.update(edit)
    msg = sign1(cbor2.dumps(m, canonical=True), fixed_key(0), kid_of(fixed_key(0).public_key()))
    with pytest.raises(VerifyError, match=message):
        decode_payload(parse1(msg)[2])


def test_normalize_merges_overlapping_and_adjacent() -> None:
    assert normalize([(9, 12), (2, 4), (5, 5), (3, 6)]) == ((2, 6), (9, 12))


def test_verifier_explains_every_range_but_not_the_kept_batches_between() -> None:
    notice = _gap([(3, 5), (7, 9), (12, 12)], unsigned=40)
    kept = [b.cose for b in CHAIN if b.seq not in (3, 4, 5, 7, 8, 9, 12)]
    v = ChainVerifier(KEYS)
    v.feed_many([*kept, notice.cose])
    r = v.summary()
    assert r.ok, r.problems
    assert (r.gaps_explained, r.gaps_unexplained, r.contradicted) == (7, 0, 0)
    assert (r.readings_dropped, r.readings_lost, r.gap_notices) == (28, 40, 1)
    # a kept batch between two ranges was never named: when it arrives nothing is contradicted,
    # a named one that arrives contradicts the notice
    v2 = ChainVerifier(KEYS)
    v2.feed_many([*kept, notice.cose, CHAIN[7].cose])  # seq 8, named
    r2 = v2.summary()
    assert r2.contradicted == 1 and not r2.ok


def test_a_hole_between_two_ranges_stays_unexplained() -> None:
    notice = _gap([(3, 4), (7, 8)])
    r = ChainVerifier(KEYS)
    r.feed_many([b.cose for b in CHAIN if b.seq not in (3, 4, 5, 7, 8)] + [notice.cose])
    rep = r.summary()
    assert rep.gaps_unexplained == 1 and rep.unexplained == ((GATEWAY, 5, 5),)
