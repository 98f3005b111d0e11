"""The loss notice (kind 3): exact round trip, refusal of malformed ones with the key path, and
the verifier counting it as a link; gap notices contradicted by batches that did arrive."""

from __future__ import annotations

import re

import cbor2
import pytest

from edge_agent.errors import ContractError, VerifyError
from edge_agent.trust.batch import BatchSigner, ChainHead, decode_payload, encode_payload
from edge_agent.trust.cose import sign1, verify1
from edge_agent.trust.loss import UNCLEAN_STOP, LossNotice
from edge_agent.trust.verify import ChainVerifier
from tests.trust.helpers import BOOT, GATEWAY, fixed_key, keyring, make_readings

KEY = fixed_key(0)
KEYS = keyring(KEY)
LOSS = LossNotice(1200, 3, 1_700_000_000_000_000_000, 1_700_000_060_000_000_000,
                  ("meter-1", "pole-1-lamp"), "backlog_full")


def test_loss_notice_round_trips_exactly() -> None:
    signer = BatchSigner(KEY, GATEWAY, BOOT)
    b = signer.sign_loss(ChainHead(4, bytes(32)), LOSS, created_ns=5, clock_synced=False)
    assert (b.seq, b.kind, b.n_readings) == (5, "loss", 0)
    p = decode_payload(verify1(b.cose, KEYS)[1])
    assert p.kind == "loss" and p.loss == LOSS and p.gap is None and p.readings == ()
    assert encode_payload(p) == verify1(b.cose, KEYS)[1]


@pytest.mark.parametrize(("key", "value", "where"), [
    (22, ["a", 3], "payload[22]"),
    (22, "meter-1", "payload[22]"),
    (23, -1, "payload[23]"),
    (15, 0, "payload[15]"),
    (23, 5000, "payload[15]"),  # more alarms than readings
    (18, 7, "payload[18]"),
])  # fmt: skip
def test_malformed_loss_notice_names_the_key(key: int, value: object, where: str) -> None:
    signer = BatchSigner(KEY, GATEWAY, BOOT)
    b = signer.sign_loss(ChainHead(0, bytes(32)), LOSS, created_ns=5, clock_synced=True)
    m = cbor2.loads(verify1(b.cose, KEYS)[1])
    m[key] = value
    with pytest.raises(VerifyError, match="^" + re.escape(where)):
        decode_payload(cbor2.dumps(m, canonical=True))


def test_verifier_links_loss_notices_and_catches_contradicted_gap_notices() -> None:
    signer = BatchSigner(KEY, GATEWAY, BOOT)
    head = ChainHead(0, bytes(32))
    out: list[bytes] = []
    for i in range(3):
        b = signer.sign_readings(head, make_readings(5, start=i * 5), created_ns=1,
                                 clock_synced=True)
        out.append(b.cose)
        head = BatchSigner.next_head(b)
    loss = signer.sign_loss(head, LOSS, created_ns=2, clock_synced=True)
    out.append(loss.cose)
    head = BatchSigner.next_head(loss)
    v = ChainVerifier(KEYS)
    v.feed_many(out)
    rep = v.summary()
    assert rep.ok and rep.loss_notices == 1 and rep.readings_lost == 1200 and rep.batches == 4
    assert rep.links_checked == 4 and rep.readings == 15
    # a gap notice naming seq 2, which did arrive: a lie, and the report says so
    gap = signer.sign_gap(head, first_seq=2, last_seq=2, readings=5, t_first_ns=0, t_last_ns=0,
                          reason="outbox_full", created_ns=3, clock_synced=True)
    v.feed(gap.cose)
    rep = v.summary()
    assert rep.contradicted == 1 and not rep.ok
    assert any("contradicted" in p for p in rep.problems)
    # and the other way round: a batch arriving after a notice announced it dropped
    v2 = ChainVerifier(KEYS)
    v2.feed_many([out[0], out[2], out[3], gap.cose])
    assert v2.summary().contradicted == 0
    v2.feed(out[1])
    assert v2.summary().contradicted == 1


def test_sign1_of_a_loss_payload_is_an_ordinary_batch() -> None:
    signer = BatchSigner(KEY, GATEWAY, BOOT)
    b = signer.sign_loss(ChainHead(0, bytes(32)), LOSS, created_ns=5, clock_synced=True)
    p = decode_payload(verify1(b.cose, KEYS)[1])
    again = sign1(encode_payload(p), KEY, signer.kid)
    assert again == b.cose  # deterministic


def test_an_unclean_stop_notice_counts_no_readings_and_only_it_may() -> None:
    signer = BatchSigner(KEY, GATEWAY, BOOT)
    stop = LossNotice(0, 0, 1, 2, ("meter-1",), UNCLEAN_STOP)
    b = signer.sign_loss(ChainHead(0, bytes(32)), stop, created_ns=5, clock_synced=True)
    assert decode_payload(verify1(b.cose, KEYS)[1]).loss == stop
    v = ChainVerifier(KEYS)
    v.feed(b.cose)
    rep = v.summary()
    assert rep.ok and rep.loss_notices == 1 and rep.readings_lost == 0
    assert [n.split(":")[0] for n in rep.notices] == [f"unclean_stop gateway={GATEWAY} seq=1"]
    with pytest.raises(ContractError, match="readings >= 1"):
        signer.sign_loss(ChainHead(0, bytes(32)), LossNotice(0, 0, 1, 2, (), "backlog_full"),
                         created_ns=5, clock_synced=True)  # fmt: skip
    m = cbor2.loads(verify1(b.cose, KEYS)[1])
    m[18] = "backlog_full"  # the same count under another reason: malformed
    with pytest.raises(VerifyError, match=re.escape("payload[15]")):
        decode_payload(cbor2.dumps(m, canonical=True))
