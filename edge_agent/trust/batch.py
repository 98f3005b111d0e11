"""The signed, hash-chained batch: payload encoding/decoding and the signer.

Every batch is a COSE_Sign1 message (see ``cose``) whose payload is one deterministic CBOR map
(RFC 8949 section 4.2.1) with small unsigned-integer keys. ``prev`` in batch N is SHA-256 of the
complete COSE bytes of batch N-1 (32 zero bytes for seq 1), so dropping, reordering or editing a
batch is visible to the consumer. Batches that had to be dropped on the gateway (outbox full) are
announced by a signed *gap notice* in the same chain; readings given up before they were ever
signed by a *loss notice* (``loss``); a gateway whose state was restored from an older copy
continues past the seqs it had already published with a signed *resume notice*
(outbox/rechain.py). docs/wire-format.md describes it byte by byte.

Payload keys (K_*) and the per-reading row ``[dev, point, unit, value, dt, flags?, wadj?, reason?]``
are documented there; the functions here are pure (no I/O, no clock unless one is not given).
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass

import cbor2

from edge_agent.errors import ContractError, VerifyError
from edge_agent.readings import Reading
from edge_agent.trust.cose import sign1
from edge_agent.trust.ed25519 import PrivateKey
from edge_agent.trust.fields import BadField, int_field, typed_field
from edge_agent.trust.gap import GapNotice, Range, gap_fields, gap_from_map
from edge_agent.trust.keys import kid_of
from edge_agent.trust.loss import KIND_LOSS, LossNotice, loss_fields, loss_from_map
from edge_agent.trust.rows import decode_readings, reading_rows

FORMAT_VERSION = 1
GENESIS_PREV = bytes(32)

# payload map keys; all < 256, so the length-first (cbor2 canonical) and the bytewise (RFC 8949
# section 4.2.1) orders of the encoded keys agree
K_VERSION = 0
K_KIND = 1
K_GATEWAY = 2
K_BOOT = 3
K_SEQ = 4
K_PREV = 5
K_CREATED = 6
K_CREATED_MONO = 7
K_SYNCED = 8
K_STRINGS = 9
K_BASE_MONO = 10
K_BASE_OFFSET = 11
K_READINGS = 12
K_GAP_FIRST = 13
K_GAP_LAST = 14
K_GAP_READINGS = 15
K_GAP_T_FIRST = 16
K_GAP_T_LAST = 17
K_GAP_REASON = 18  # also the reason of a resume notice
K_RESUME_FROM = 19
K_RESUME_LOCAL_HEAD = 20
K_RESUME_RESIGNED = 21

KIND_DATA = 0
KIND_GAP = 1
KIND_RESUME = 2
KIND_NAMES = {KIND_DATA: "data", KIND_GAP: "gap", KIND_RESUME: "resume", KIND_LOSS: "loss"}
KIND_CODES = {v: k for k, v in KIND_NAMES.items()}


@dataclass(frozen=True, slots=True)
class ChainHead:
    seq: int  # last seq used; 0 = none yet
    prev: bytes  # SHA-256 of the last batch's COSE bytes; 32 zero bytes at genesis

    @classmethod
    def genesis(cls) -> ChainHead:
        return cls(0, GENESIS_PREV)


@dataclass(frozen=True, slots=True)
class SignedBatch:
    seq: int
    cose: bytes
    digest: bytes  # SHA-256 of cose
    kind: str  # "data" | "gap" | "resume"
    n_readings: int  # readings carried (0 for a notice)
    alarm: bool  # any reading is an alarm
    t_first_ns: int  # earliest reading wall time (gap: start of the dropped span)
    t_last_ns: int  # latest reading wall time (gap: end of the dropped span)


@dataclass(frozen=True, slots=True)
class ResumeNotice:
    """The gateway's state was rolled back (restored from an older copy): the chain continues at
    this notice, right after the last seq the gateway had published (its witness). Local seqs
    ``from_seq``..``local_head`` of the restored state are re-signed after the notice, in order,
    as seq+1, seq+2, ...; seqs ``from_seq``..seq-1 are not vouched for by the restored state."""

    from_seq: int  # first seq the restored state could not vouch for
    local_head: int  # the restored state's head seq when it learnt of the rollback
    resigned: int  # batches of from_seq..local_head it re-signed after this notice
    reason: str  # e.g. "state_rollback"


@dataclass(frozen=True, slots=True)
class BatchPayload:
    version: int
    kind: str  # "data" | "gap" | "resume"
    gateway_id: str
    boot_id: str
    seq: int
    prev: bytes
    created_ns: int  # wall clock when signed
    created_mono_ns: int  # monotonic clock when signed (this boot)
    clock_synced: bool  # wall clock synchronised when signed
    readings: tuple[Reading, ...] = ()
    gap: GapNotice | None = None
    resume: ResumeNotice | None = None
    loss: LossNotice | None = None


def _header(p: BatchPayload) -> dict[int, object]:
    kind = KIND_CODES.get(p.kind)
    if kind is None:
        raise ContractError(f"batch kind must be one of {sorted(KIND_CODES)}, not {p.kind!r}")
    if len(p.prev) != 32:
        raise ContractError(f"prev must be 32 bytes, got {len(p.prev)}")
    return {
        K_VERSION: p.version,
        K_KIND: kind,
        K_GATEWAY: p.gateway_id,
        K_BOOT: p.boot_id,
        K_SEQ: p.seq,
        K_PREV: bytes(p.prev),
        K_CREATED: p.created_ns,
        K_CREATED_MONO: p.created_mono_ns,
        K_SYNCED: bool(p.clock_synced),
    }


def encode_payload(p: BatchPayload) -> bytes:
    """Deterministic CBOR of a payload (cbor2 canonical: sorted one-byte keys, shortest heads and
    shortest exact floats). ``encode_payload(decode_payload(b)) == b`` for every payload we make."""
    m = _header(p)
    if ((p.gap is not None) != (p.kind == "gap") or (p.resume is not None) != (p.kind == "resume")
            or (p.loss is not None) != (p.kind == "loss")):
        raise ContractError(f"a {p.kind} batch carries exactly its own notice")
    if p.kind == "data":
        strings, base_mono, base_off, rows = reading_rows(p.readings)
        m[K_STRINGS] = strings
        m[K_BASE_MONO] = base_mono
        m[K_BASE_OFFSET] = base_off
        m[K_READINGS] = rows
    elif p.readings:
        raise ContractError("a notice carries no readings")
    elif p.resume is not None:
        r = p.resume
        m[K_GAP_REASON] = r.reason
        m[K_RESUME_FROM] = r.from_seq
        m[K_RESUME_LOCAL_HEAD] = r.local_head
        m[K_RESUME_RESIGNED] = r.resigned
    elif p.loss is not None:
        m.update(loss_fields(p.loss))
    else:
        assert p.gap is not None
        m.update(gap_fields(p.gap, p.seq))
    return cbor2.dumps(m, canonical=True)


def _decode(payload: bytes) -> BatchPayload:
    try:
        m = cbor2.loads(payload)
    except Exception as exc:  # cbor2 raises several types on garbage; all mean "malformed"
        raise BadField("", f"not valid CBOR ({exc})") from None
    if type(m) is not dict:
        raise BadField("", f"expected a map, got {type(m).__name__}")
    version = int_field(m, K_VERSION)
    if version != FORMAT_VERSION:
        raise BadField(f"[{K_VERSION}]", f"unsupported format version {version}")
    kind_code = int_field(m, K_KIND)
    if kind_code not in KIND_NAMES:
        raise BadField(f"[{K_KIND}]", f"unknown batch kind {kind_code}")
    prev = typed_field(m, K_PREV, bytes)
    if len(prev) != 32:
        raise BadField(f"[{K_PREV}]", f"prev is {len(prev)} bytes, not 32")
    gateway = typed_field(m, K_GATEWAY, str)
    if not gateway:
        raise BadField(f"[{K_GATEWAY}]", "empty gateway id")
    boot = typed_field(m, K_BOOT, str)
    seq = int_field(m, K_SEQ, minimum=1)
    created, created_mono = int_field(m, K_CREATED), int_field(m, K_CREATED_MONO)
    synced = typed_field(m, K_SYNCED, bool)
    kind = KIND_NAMES[kind_code]
    if kind_code == KIND_DATA:
        readings = decode_readings(m)
        return BatchPayload(
            version, kind, gateway, boot, seq, prev, created, created_mono, synced, readings
        )
    if kind_code == KIND_RESUME:
        resume = ResumeNotice(
            from_seq=int_field(m, K_RESUME_FROM, minimum=1),
            local_head=int_field(m, K_RESUME_LOCAL_HEAD, minimum=0),
            resigned=int_field(m, K_RESUME_RESIGNED, minimum=0),
            reason=typed_field(m, K_GAP_REASON, str),
        )
        if resume.from_seq > seq:
            raise BadField(f"[{K_RESUME_FROM}]", f"resume from {resume.from_seq} after seq {seq}")
        if resume.resigned > max(0, resume.local_head - resume.from_seq + 1):
            raise BadField(
                f"[{K_RESUME_RESIGNED}]",
                f"{resume.resigned} re-signed batches do not fit"
                f" in {resume.from_seq}..{resume.local_head}",
            )
        return BatchPayload(
            version, kind, gateway, boot, seq, prev, created, created_mono, synced, (), None, resume
        )
    if kind_code == KIND_LOSS:
        loss = loss_from_map(m)
        return BatchPayload(
            version, kind, gateway, boot, seq, prev, created, created_mono, synced, loss=loss
        )
    gap = gap_from_map(m, seq)
    return BatchPayload(
        version, kind, gateway, boot, seq, prev, created, created_mono, synced, (), gap
    )


def decode_payload(payload: bytes) -> BatchPayload:
    """Parse a batch payload; VerifyError naming the element path (``payload[12][3][4]``: map key
    12, row 3, element 4) on anything malformed. Never raises another exception type."""
    try:
        return _decode(payload)
    except BadField as exc:
        raise VerifyError(str(exc)) from None
    except Exception as exc:  # defensive: untrusted shapes must only ever yield VerifyError
        raise VerifyError(f"payload: malformed ({type(exc).__name__}: {exc})") from None


class BatchSigner:
    """Signs data batches and gap notices for one gateway and boot. Holds no chain state: the caller
    (outbox) owns the ChainHead and persists it atomically with the batch."""

    def __init__(self, key: PrivateKey, gateway_id: str, boot_id: str) -> None:
        if not gateway_id:
            raise ContractError("gateway_id must not be empty")
        self._key = key
        self.kid = kid_of(key.public_key())
        self.gateway_id = gateway_id
        self.boot_id = boot_id

    def _sign(self, p: BatchPayload) -> SignedBatch:
        cose = sign1(encode_payload(p), self._key, self.kid)
        if p.gap is not None:
            t_first, t_last = p.gap.t_first_ns, p.gap.t_last_ns
        elif p.loss is not None:
            t_first, t_last = p.loss.t_first_ns, p.loss.t_last_ns
        elif p.readings:
            t_first = min(r.ts_ns for r in p.readings)
            t_last = max(r.ts_ns for r in p.readings)
        else:
            t_first = t_last = p.created_ns
        return SignedBatch(
            seq=p.seq, cose=cose, digest=hashlib.sha256(cose).digest(), kind=p.kind,
            n_readings=len(p.readings), alarm=any(r.alarm for r in p.readings),
            t_first_ns=t_first, t_last_ns=t_last,
        )  # fmt: skip

    def sign_readings(
        self,
        head: ChainHead,
        readings: Sequence[Reading],
        *,
        created_ns: int,
        clock_synced: bool,
        created_mono_ns: int | None = None,
    ) -> SignedBatch:
        """Batch ``head.seq + 1`` chained to ``head.prev``. ``created_mono_ns`` defaults to now."""
        mono = time.monotonic_ns() if created_mono_ns is None else created_mono_ns
        p = BatchPayload(
            FORMAT_VERSION, "data", self.gateway_id, self.boot_id, head.seq + 1, head.prev,
            created_ns, mono, clock_synced, tuple(readings),
        )  # fmt: skip
        return self._sign(p)

    def sign_gap(
        self,
        head: ChainHead,
        *,
        first_seq: int = 0,
        last_seq: int = 0,
        ranges: Sequence[Range] = (),
        readings: int,
        t_first_ns: int,
        t_last_ns: int,
        reason: str,
        created_ns: int,
        clock_synced: bool,
        created_mono_ns: int | None = None,
        unsigned: int = 0,
    ) -> SignedBatch:
        """A gap notice (its own seq ``head.seq + 1``) saying the batches of ``ranges`` (or of
        first_seq..last_seq), holding ``readings`` readings, were dropped. They must be
        already-used seqs: 1 <= first <= last <= head.seq. ``unsigned``: readings that loss
        notices among them had announced (see ``trust.gap``)."""
        spans = tuple(ranges) if ranges else ((first_seq, last_seq),)
        if not all(1 <= a <= b <= head.seq for a, b in spans):
            raise ContractError(f"gap {spans} must lie within used seqs 1..{head.seq}")
        mono = time.monotonic_ns() if created_mono_ns is None else created_mono_ns
        gap = GapNotice(spans, readings, t_first_ns, t_last_ns, reason, unsigned)
        p = BatchPayload(
            FORMAT_VERSION, "gap", self.gateway_id, self.boot_id, head.seq + 1, head.prev,
            created_ns, mono, clock_synced, (), gap,
        )  # fmt: skip
        return self._sign(p)

    def sign_resume(
        self,
        head: ChainHead,
        notice: ResumeNotice,
        *,
        created_ns: int,
        clock_synced: bool,
        created_mono_ns: int | None = None,
    ) -> SignedBatch:
        """A resume notice (seq ``head.seq + 1``, chained to ``head.prev``: the witnessed last
        published batch) after a state rollback; see ``ResumeNotice``."""
        if not 1 <= notice.from_seq <= head.seq + 1:
            raise ContractError(f"resume from {notice.from_seq} must lie within 1..{head.seq + 1}")
        mono = time.monotonic_ns() if created_mono_ns is None else created_mono_ns
        p = BatchPayload(
            FORMAT_VERSION, "resume", self.gateway_id, self.boot_id, head.seq + 1, head.prev,
            created_ns, mono, clock_synced, (), None, notice,
        )  # fmt: skip
        return self._sign(p)

    def resign(self, payload: BatchPayload, head: ChainHead) -> SignedBatch:
        """The same batch (readings or notice, boot id, clocks) as seq ``head.seq + 1`` chained to
        ``head.prev``: how outbox/rechain.py moves batches past a witnessed seq."""
        if payload.gateway_id != self.gateway_id:
            raise ContractError(f"batch of gateway {payload.gateway_id!r}, not {self.gateway_id!r}")
        return self._sign(dataclasses.replace(payload, seq=head.seq + 1, prev=head.prev))

    def sign_loss(
        self, head: ChainHead, loss: LossNotice, *, created_ns: int, clock_synced: bool
    ) -> SignedBatch:
        """A loss notice (seq ``head.seq + 1``): readings given up before they were signed."""
        p = BatchPayload(
            FORMAT_VERSION, "loss", self.gateway_id, self.boot_id, head.seq + 1, head.prev,
            created_ns, time.monotonic_ns(), clock_synced, loss=loss,
        )  # fmt: skip
        return self._sign(p)

    @staticmethod
    def next_head(batch: SignedBatch) -> ChainHead:
        return ChainHead(batch.seq, batch.digest)
