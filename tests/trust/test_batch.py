from __future__ import annotations

import hashlib
import math

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.errors import CodecError, ContractError, VerifyError
from edge_agent.readings import Quality, Reading
from edge_agent.trust import batch as batch_mod
from edge_agent.trust.batch import (
    GENESIS_PREV,
    BatchPayload,
    BatchSigner,
    ChainHead,
    decode_payload,
    encode_payload,
)
from edge_agent.trust.cose import sign1, verify1
from edge_agent.trust.fields import BadField
from tests.trust import cbor_ref
from tests.trust.helpers import (
    BOOT,
    GATEWAY,
    M0,
    T0,
    fixed_key,
    keyring,
    make_readings,
    odd_readings,
)

KEYS = keyring(fixed_key(0))


def _payload(cose: bytes) -> bytes:
    return verify1(cose, KEYS)[1]


def test_round_trip_every_field(signer: BatchSigner) -> None:
    readings = odd_readings()
    b = signer.sign_readings(
        ChainHead.genesis(), readings, created_ns=T0, clock_synced=False, created_mono_ns=M0
    )
    p = decode_payload(_payload(b.cose))
    assert p.readings == tuple(readings)
    assert [type(r.value) for r in p.readings] == [type(r.value) for r in readings]
    assert (p.version, p.kind, p.gateway_id, p.boot_id) == (1, "data", GATEWAY, BOOT)
    assert (p.seq, p.prev, p.created_ns, p.created_mono_ns) == (1, GENESIS_PREV, T0, M0)
    assert p.clock_synced is False and p.gap is None
    assert b.seq == 1 and b.kind == "data" and b.n_readings == len(readings)
    assert b.digest == hashlib.sha256(b.cose).digest()
    assert b.alarm is True
    assert (b.t_first_ns, b.t_last_ns) == (0, T0 + 99_000_000_000)
    nan = Reading("d", "p", math.nan, "", T0, M0)
    nb = signer.sign_readings(ChainHead.genesis(), [nan], created_ns=T0, clock_synced=True)
    got = decode_payload(_payload(nb.cose))
    assert isinstance(got.readings[0].value, float) and math.isnan(got.readings[0].value)


def test_chain_fields_and_next_head(signer: BatchSigner) -> None:
    head = ChainHead(41, b"\x07" * 32)
    b = signer.sign_readings(head, make_readings(5), created_ns=T0, clock_synced=True)
    p = decode_payload(_payload(b.cose))
    assert (b.seq, p.seq, p.prev) == (42, 42, b"\x07" * 32)
    assert b.alarm is False
    assert BatchSigner.next_head(b) == ChainHead(42, hashlib.sha256(b.cose).digest())


def test_encoding_is_core_deterministic(signer: BatchSigner) -> None:
    for readings in (odd_readings(), make_readings(50), []):
        b = signer.sign_readings(ChainHead.genesis(), readings, created_ns=T0, clock_synced=True)
        payload = _payload(b.cose)
        # independent RFC 8949 4.2.1 encoder over the decoded data model gives the same bytes
        assert cbor_ref.encode(cbor2.loads(payload)) == payload
        # and decoding to Readings then re-encoding is byte-identical
        assert encode_payload(decode_payload(payload)) == payload
        keys = list(cbor2.loads(payload))
        assert keys == sorted(keys) and all(0 <= k < 24 for k in keys)


def test_compact_size(signer: BatchSigner) -> None:
    readings = make_readings(200, devices=10)
    b = signer.sign_readings(ChainHead.genesis(), readings, created_ns=T0, clock_synced=True)
    payload = _payload(b.cose)
    # row head 1 + dev/point/unit 3 + value 1..3 + dt 5 (10 ms apart) + flags 1 + wadj 3:
    # ~15.7 bytes; a JSON record of the same reading is ~150
    assert len(payload) / 200 < 16.5, len(payload) / 200
    assert len(b.cose) - len(payload) == 94  # COSE envelope: 2 + 22 + 1 + 3 + 66


def test_points_of_one_request_cost_no_time_bytes(signer: BatchSigner) -> None:
    # the poller stamps all points decoded from one request with the same (mono, wall) pair
    group = [Reading("m1", f"p{i}", 1000 + i, "W", T0 + 777, M0) for i in range(4)]
    b = signer.sign_readings(ChainHead.genesis(), group, created_ns=T0, clock_synced=True)
    rows = cbor2.loads(_payload(b.cose))[12]
    assert rows[1:] == [[0, 3, 2, 1001, 0], [0, 4, 2, 1002, 0], [0, 5, 2, 1003, 0]]
    row_bytes = cbor_ref.encode(rows[1])
    assert row_bytes.hex() == "85000302" + "1903e9" + "00"  # 8 bytes for the whole reading


def test_gap_notice(signer: BatchSigner) -> None:
    head = ChainHead(10, b"\x01" * 32)
    g = signer.sign_gap(
        head, first_seq=3, last_seq=7, readings=123, t_first_ns=T0, t_last_ns=T0 + 9,
        reason="outbox_full", created_ns=T0 + 10, clock_synced=True, created_mono_ns=M0,
    )  # fmt: skip
    assert (g.seq, g.kind, g.n_readings, g.alarm) == (11, "gap", 0, False)
    assert (g.t_first_ns, g.t_last_ns) == (T0, T0 + 9)
    p = decode_payload(_payload(g.cose))
    assert p.kind == "gap" and p.readings == () and p.prev == b"\x01" * 32
    assert p.gap is not None
    assert (p.gap.first_seq, p.gap.last_seq, p.gap.readings) == (3, 7, 123)
    assert (p.gap.t_first_ns, p.gap.t_last_ns, p.gap.reason) == (T0, T0 + 9, "outbox_full")
    assert encode_payload(p) == _payload(g.cose)
    for first, last in ((0, 3), (5, 4), (3, 11)):
        with pytest.raises(ContractError, match="within used seqs"):
            signer.sign_gap(
                head, first_seq=first, last_seq=last, readings=1, t_first_ns=0, t_last_ns=0,
                reason="x", created_ns=0, clock_synced=True,
            )  # fmt: skip


def test_unencodable_value_is_a_codec_error(signer: BatchSigner) -> None:
    bad = Reading("dev", "pt", b"bytes", "", T0, M0)  # type: ignore[arg-type]
    with pytest.raises(CodecError, match=r"reading 0 .*dev/pt.*bytes"):
        signer.sign_readings(ChainHead.genesis(), [bad], created_ns=T0, clock_synced=True)


def _mutate(payload: bytes, path: tuple[int, ...], value: object) -> bytes:
    m = cbor2.loads(payload)
    target = m
    for k in path[:-1]:
        target = target[k]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return cbor2.dumps(m, canonical=True)


@pytest.mark.parametrize(
    ("path", "value", "where"),
    [
        ((0,), 2, r"payload\[0\]: unsupported format version 2"),
        ((1,), 9, r"payload\[1\]: unknown batch kind"),
        ((4,), 0, r"payload\[4\]: 0 is below 1"),
        ((5,), b"short", r"payload\[5\]: prev is 5 bytes"),
        ((2,), KeyError, r"payload\[2\]: expected str, got NoneType"),
        ((9, 1), 7, r"payload\[9\]\[1\]: string table entry is not text"),
        ((12, 2, 0), 99, r"payload\[12\]\[2\]\[0\]: string index 99 outside table"),
        ((12, 1, 3), [1], r"payload\[12\]\[1\]\[3\]: value of type list"),
        ((12, 0, 4), 1.5, r"payload\[12\]\[0\]\[4\]: time delta"),
        ((12, 0), [0, 1], r"payload\[12\]\[0\]: reading row must be"),
        ((12, 1), [0, 1, 2, 3, 4, 0x13], r"payload\[12\]\[1\]\[5\]: invalid flags 19"),
        ((12, 1), [0, 1, 2, 3, 4, 0x20], r"payload\[12\]\[1\]\[5\]: invalid flags 32"),
        ((12, 1), [0, 1, 2, 3, 4, -1], r"payload\[12\]\[1\]\[5\]: invalid flags -1"),
    ],
)
def test_decode_errors_name_the_element(
    signer: BatchSigner, path: tuple[int, ...], value: object, where: str
) -> None:
    b = signer.sign_readings(
        ChainHead.genesis(), make_readings(3), created_ns=T0, clock_synced=True
    )
    with pytest.raises(VerifyError, match=where):
        decode_payload(_mutate(_payload(b.cose), path, value))


def test_decode_garbage_payload() -> None:
    for junk in (b"", b"\xff", cbor2.dumps([1, 2]), b"\xa1\x00"):
        with pytest.raises(VerifyError, match="payload"):
            decode_payload(junk)


values = (
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64 - 1)
    | st.text(max_size=8)
    | (st.floats(allow_nan=False))
)
names = st.sampled_from(["a", "b", "meter-1", "ü", ""])
readings_st = st.builds(
    Reading,
    device=names, point=names, value=values, unit=names,
    ts_ns=st.integers(0, 2**63), mono_ns=st.integers(0, 2**62),
    quality=st.sampled_from(list(Quality)), reason=names, alarm=st.booleans(),
    clock_synced=st.booleans(),
)  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(st.lists(readings_st, max_size=12), st.integers(0, 2**40))
def test_round_trip_property(readings: list[Reading], seq: int) -> None:
    signer = BatchSigner(fixed_key(0), GATEWAY, BOOT)
    b = signer.sign_readings(
        ChainHead(seq, b"\x05" * 32), readings, created_ns=T0, clock_synced=True
    )
    payload = _payload(b.cose)
    p = decode_payload(payload)
    assert p.readings == tuple(readings)
    assert encode_payload(p) == payload
    assert cbor_ref.encode(cbor2.loads(payload)) == payload


def test_sign1_payload_is_what_pipeline_signs(signer: BatchSigner) -> None:
    b = signer.sign_readings(ChainHead.genesis(), make_readings(2), created_ns=T0,
                             clock_synced=True, created_mono_ns=M0)  # fmt: skip
    assert b.cose == sign1(_payload(b.cose), fixed_key(0), signer.kid)  # Ed25519 is deterministic


payload_fields = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 2**64), st.text(max_size=4), st.binary(max_size=33),
    st.floats(), st.lists(st.lists(st.integers(-2, 20) | st.none(), max_size=9), max_size=3),
    st.lists(st.text(max_size=3), max_size=4),
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.integers(0, 20), payload_fields, max_size=19))
def test_decode_never_raises_anything_but_verify_error(m: dict[int, object]) -> None:
    try:
        p = batch_mod._decode(cbor2.dumps(m, canonical=True))  # without the last-resort catch-all
    except BadField:
        return
    assert p.seq >= 1 and len(p.prev) == 32  # it decoded: then it must be a coherent payload


_VALID = cbor2.loads(
    encode_payload(
        BatchPayload(1, "data", GATEWAY, BOOT, 3, bytes(32), T0, M0, True, tuple(odd_readings()))
    )
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(_VALID)), payload_fields, st.integers(0, 7), st.booleans())
def test_mutated_payload_only_raises_verify_error(
    key: int, value: object, row: int, whole: bool
) -> None:
    m = dict(_VALID)
    if whole or key != 12:
        m[key] = value
    else:
        rows = list(m[12])
        rows[row] = value
        m[12] = rows
    # the validation itself (not decode_payload's last-resort catch-all) must reject every shape
    try:
        batch_mod._decode(cbor2.dumps(m, canonical=True))
    except BadField:
        pass


def test_quality_codes_on_the_wire(signer: BatchSigner) -> None:
    """Quality code = flags bits 0-1 plus bit 4 as its third bit (docs/wire-format.md)."""
    qs = [Quality.GOOD, Quality.STALE, Quality.BAD, Quality.OUT_OF_RANGE, Quality.UNREADABLE]
    readings = [Reading("d", f"p{i}", None, "", T0, M0, q, "exc:2" if i else "")
                for i, q in enumerate(qs)]
    readings.append(Reading("d", "a", None, "", T0, M0, Quality.UNREADABLE, "exc:2", True, False))
    b = signer.sign_readings(ChainHead.genesis(), readings, created_ns=T0, clock_synced=True)
    rows = cbor2.loads(_payload(b.cose))[12]
    assert [row[5] if len(row) > 5 else 0 for row in rows] == [0, 1, 2, 3, 0x10, 0x10 | 0x04 | 0x08]
    assert decode_payload(_payload(b.cose)).readings == tuple(readings)
