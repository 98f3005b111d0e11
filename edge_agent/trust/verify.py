"""Consumer-side verification of a stream of signed batches (any number of gateways).

``ChainVerifier.feed(cose_bytes)`` checks the COSE_Sign1 signature against the configured public
keys, decodes the payload and files the batch into its gateway's chain. Batches may arrive in any
order: each gateway keeps a reorder window of up to ``window`` batches waiting for the next
expected seq. When the window overflows (or in a report) the missing seqs are skipped and recorded
as a gap; a signed gap notice — or a resume notice (a gateway moving past what its restored state
had published) — covering them makes the gap *explained*, otherwise it stays *unexplained*. Every
link N-1 -> N whose both ends were seen is checked: ``prev`` of N must be SHA-256 of the complete
COSE bytes of N-1 (32 zero bytes for seq 1). The link after a gap cannot be checked (the dropped
batch is gone) and is counted in ``links_unchecked``; a batch arriving after its seq was given up
is filled in and both its links are checked then.

Same gateway + seq with identical bytes counts as a duplicate (QoS 1 redelivery); with different
bytes it is a conflict: two validly signed, different batches for one seq. The digest of every seq
ever seen is kept, so a conflict is found however old the first copy is. A batch that arrives
although a gap notice announced it as dropped *contradicts* that notice (a notice must name only
batches that never reached the broker), whichever came first. Loss notices (readings given up
before they were signed) are links like any other and are counted.

The state (``verify_state.VerifyState``) is SQLite: a private temporary database by default, or a
file an archiver resumes from after a restart (``commit()`` makes what was fed durable). Memory
holds only the reorder windows; every lookup is indexed.
"""

from __future__ import annotations

import copy
import hashlib
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from edge_agent.errors import ContractError, VerifyError
from edge_agent.trust.batch import GENESIS_PREV, BatchPayload, decode_payload
from edge_agent.trust.cose import verify1
from edge_agent.trust.ed25519 import PublicKey
from edge_agent.trust.loss import UNCLEAN_STOP
from edge_agent.trust.verify_report import COUNTERS, MAX_PROBLEMS, Accepted, VerifyReport
from edge_agent.trust.verify_state import VerifyState

__all__ = ["COUNTERS", "MAX_PROBLEMS", "Accepted", "ChainVerifier", "VerifyReport"]

log = logging.getLogger(__name__)

@dataclass(slots=True)
class _Entry:
    seq: int
    digest: bytes
    prev: bytes


@dataclass(slots=True)
class _Chain:
    gw: int  # row id in the state
    gateway: str
    next_seq: int | None = None  # next seq to link; None until the start is known
    last_digest: bytes | None = None  # digest of seq next_seq-1 if it was seen
    start: int = 0  # lowest seq linked so far
    pending: dict[int, _Entry] = field(default_factory=dict)  # the reorder window
    dirty: bool = False


class ChainVerifier:
    def __init__(
        self,
        public_keys: Mapping[bytes, PublicKey],
        *,
        bindings: Mapping[str, Iterable[bytes]] | None = None,
        window: int = 256,
        state: VerifyState | None = None,
    ) -> None:
        """``public_keys`` maps kid -> key. ``bindings`` (gateway id -> its kids) restricts which
        key may sign for which gateway, both ways; gateways not bound are pinned to the first kid
        they are seen with (pins are kept in the state). ``window``: out-of-order batches held per
        gateway before the missing ones are given up as a gap. ``state``: where to keep it all
        (default: a temporary database)."""
        if window < 1:
            raise ContractError("need window >= 1")
        self._keys = dict(public_keys)
        self._bound: dict[str, set[bytes]] = {}
        self._kid_owner: dict[bytes, str] = {}
        for gw, kids in (bindings or {}).items():
            for kid in kids:
                self._bound.setdefault(gw, set()).add(kid)
                self._kid_owner[kid] = gw
        self._window = window
        self.state = state if state is not None else VerifyState()
        st = self.state
        saved = st.counters()
        self._c = {k: saved.get(k, 0) for k in COUNTERS}
        self._quiet = False  # no log lines for gaps a report only supposes
        self._chains: dict[str, _Chain] = {}
        for gw_id, name, next_seq, last, start in st.chains():
            chain = self._chains[name] = _Chain(gw_id, name, next_seq, last, start)
            for seq, digest, prev in st.seen_from(gw_id, 0 if next_seq is None else next_seq):
                chain.pending[seq] = _Entry(seq, digest, prev)
        self._pins: dict[str, set[bytes]] = {}
        for name, kid in st.pins():
            self._pins.setdefault(name, set()).add(kid)

    # -- feeding ---------------------------------------------------------------------------------

    def feed(self, msg: bytes, *, source: str = "") -> Accepted | None:
        """Check one batch. Returns it when the signature and payload are good (even if it is a
        duplicate, a conflict or breaks the chain: those are counted), None when it is forged or
        malformed."""
        where = f" {source}" if source else ""
        try:
            kid, payload = verify1(msg, self._keys)
            p = decode_payload(payload)
        except VerifyError as exc:
            self._c["forged"] += 1
            self._problem(f"forged{where}: {exc}")
            return None
        wrong = self._wrong_signer(kid, p.gateway_id)
        if wrong:
            self._c["forged"] += 1
            self._problem(f"forged{where}: {wrong}")
            return None
        chain = self._chain(p.gateway_id)
        digest = hashlib.sha256(msg).digest()
        first = self._seen(chain, p.seq)
        if first is not None:
            if first == digest:
                self._c["duplicates"] += 1
                return Accepted(kid, p, digest, "duplicate")
            self._c["conflicts"] += 1
            self._problem(f"conflict gateway={chain.gateway} seq={p.seq}: two different batches")
            return Accepted(kid, p, digest, "conflict")
        entry = _Entry(p.seq, digest, p.prev)
        self._contradictions(chain, p)
        self.state.add_seen(chain.gw, p.seq, digest, p.prev)
        if p.gap is not None:
            for a, b in p.gap.ranges:
                self._claim(chain, a, b)
                self.state.add_claim(chain.gw, a, b, "dropped")
        if p.resume is not None:
            self._resumed(chain, p)
        if chain.next_seq is not None and p.seq < chain.next_seq:
            self._late(chain, entry)
        else:
            chain.pending[p.seq] = entry
            if chain.next_seq is None and p.seq == 1:
                chain.next_seq = chain.start = 1  # genesis seen: the chain starts here for sure
            self._advance(chain)
            while len(chain.pending) > self._window:
                self._skip(chain)
        chain.dirty = True
        self._c["batches"] += 1
        if p.gap is not None:
            self._c["gap_notices"] += 1
            self._c["readings_dropped"] += p.gap.readings
            self._c["readings_lost"] += p.gap.unsigned
        elif p.loss is not None:
            self._c["loss_notices"] += 1
            self._c["readings_lost"] += p.loss.readings
            if p.loss.reason == UNCLEAN_STOP:
                self.state.add_event("notice", f"unclean_stop gateway={chain.gateway} seq={p.seq}:"
                                     " the run before stopped without its clean stop; its"
                                     f" readings after seq {p.seq - 1} are lost, uncounted")
        else:
            self._c["readings"] += len(p.readings)
        return Accepted(kid, p, digest)

    def _contradictions(self, chain: _Chain, p: BatchPayload) -> None:
        """A new gap notice naming batches seen, or a new batch a gap notice named as dropped."""
        if p.gap is not None:
            n, seqs = 0, list[int]()
            for a, b in p.gap.ranges:
                k, some = self.state.seen_within(chain.gw, a, b)
                n, seqs = n + k, (seqs + some)[:10]
        elif self.state.claim_end(chain.gw, p.seq, "dropped") is not None:
            n, seqs = 1, [p.seq]
        else:
            return
        if n:
            self._c["contradicted"] += n
            self._problem(f"contradicted gateway={chain.gateway} seqs={seqs}: announced as "
                          "dropped by a gap notice, yet they arrived")  # fmt: skip

    def feed_many(self, msgs: Iterable[bytes]) -> None:
        for m in msgs:
            self.feed(m)

    def _chain(self, gateway: str) -> _Chain:
        chain = self._chains.get(gateway)
        if chain is None:
            chain = self._chains[gateway] = _Chain(self.state.add_chain(gateway), gateway)
        return chain

    def _wrong_signer(self, kid: bytes, gateway: str) -> str:
        """Why ``kid`` may not sign for ``gateway`` ("" when it may). Pins unbound gateways."""
        owner = self._kid_owner.get(kid)
        if owner is not None and owner != gateway:
            return f"kid {kid.hex()} belongs to gateway {owner}, batch claims gateway {gateway}"
        kids = self._bound.get(gateway) or self._pins.get(gateway)
        if kids is None:
            self._pins[gateway] = {kid}  # trust on first use
            self.state.add_pin(self._chain(gateway).gw, kid)
            return ""
        if kid not in kids:
            known = ",".join(sorted(k.hex() for k in kids))
            return f"gateway {gateway} signs with kid {known}, not {kid.hex()}"
        return ""

    def _seen(self, chain: _Chain, seq: int) -> bytes | None:
        entry = chain.pending.get(seq)
        if entry is not None:
            return entry.digest
        row = self.state.seen(chain.gw, seq)
        return None if row is None else row[0]

    def _resumed(self, chain: _Chain, p: BatchPayload) -> None:
        r = p.resume
        assert r is not None
        self._c["resumes"] += 1
        text = (f"resume gateway={chain.gateway} seq={p.seq} reason={r.reason}: restored state "
                f"vouches for nothing from seq {r.from_seq}; its seqs {r.from_seq}..{r.local_head} "
                f"({r.resigned} batches) re-signed from seq {p.seq + 1}")  # fmt: skip
        log.warning("chain_resume gateway=%s seq=%d from_seq=%d local_head=%d resigned=%d "
                    "reason=%s", chain.gateway, p.seq, r.from_seq, r.local_head, r.resigned,
                    r.reason)  # fmt: skip
        self.state.add_event("notice", text)
        if r.from_seq < p.seq:
            self._claim(chain, r.from_seq, p.seq - 1)

    # -- gaps ------------------------------------------------------------------------------------

    def _claim(self, chain: _Chain, a: int, b: int) -> None:
        """A notice explains a..b: remember it, and explain what is already missing there."""
        st = self.state
        st.add_claim(chain.gw, a, b)
        for x, y in st.open_missing_over(chain.gw, a, b):
            st.drop_missing(chain.gw, x)
            for lo, hi, explained in ((x, a - 1, False), (max(x, a), min(y, b), True),
                                      (b + 1, y, False)):  # fmt: skip
                if lo <= hi:
                    st.put_missing(chain.gw, lo, hi, explained)
            n = min(y, b) - max(x, a) + 1
            self._c["gaps_unexplained"] -= n
            self._c["gaps_explained"] += n

    def _missing(self, chain: _Chain, a: int, b: int) -> None:
        """Seqs a..b are given up: record them, split by what the notices explain."""
        cur = a
        for x, y in [*self.state.claims_over(chain.gw, a, b), (b + 1, b + 1)]:
            if x > cur:
                hi = min(x - 1, b)
                self.state.put_missing(chain.gw, cur, hi, False)
                self._c["gaps_unexplained"] += hi - cur + 1
                if not self._quiet:
                    log.warning("chain_gap gateway=%s first=%d last=%d", chain.gateway, cur, hi)
            lo, hi = max(x, cur), min(y, b)
            if lo <= hi:
                self.state.put_missing(chain.gw, lo, hi, True)
                self._c["gaps_explained"] += hi - lo + 1
            cur = max(cur, y + 1)
            if cur > b:
                break

    # -- linking ---------------------------------------------------------------------------------

    def _link(self, chain: _Chain, prev_digest: bytes | None, entry: _Entry) -> None:
        if prev_digest is None:
            if entry.seq == 1:
                prev_digest = GENESIS_PREV
            else:
                self._c["links_unchecked"] += 1
                return
        self._c["links_checked"] += 1
        if entry.prev != prev_digest:
            self._c["broken_chain"] += 1
            self._problem(
                f"broken_chain gateway={chain.gateway} seq={entry.seq}: prev does not match "
                f"SHA-256 of seq {entry.seq - 1}"
            )

    def _advance(self, chain: _Chain) -> None:
        while chain.next_seq is not None and chain.pending:
            seq = chain.next_seq
            if seq not in chain.pending:
                # a notice already explained this seq: no need to wait for it (but link any
                # batch of the claimed range that did arrive)
                end = self.state.claim_end(chain.gw, seq)
                if end is None:
                    return
                end = min(end, min(chain.pending) - 1)
                self._missing(chain, seq, end)
                chain.next_seq = end + 1
                chain.last_digest = None
                continue
            entry = chain.pending.pop(seq)
            self._link(chain, chain.last_digest, entry)
            chain.last_digest = entry.digest
            chain.next_seq += 1

    def _skip(self, chain: _Chain) -> None:
        """Give up waiting: jump to the lowest pending seq, recording what was skipped."""
        low = min(chain.pending)
        if chain.next_seq is not None and low > chain.next_seq:
            self._missing(chain, chain.next_seq, low - 1)
        if chain.next_seq is None:
            chain.start = low
        chain.next_seq = low
        chain.last_digest = None
        self._advance(chain)

    def _late(self, chain: _Chain, entry: _Entry) -> None:
        """A batch below the next seq to link, never seen: its seq was given up as missing, or it
        lies before the first one linked. Fill it in and check both its links."""
        self._c["late"] += 1
        st, seq = self.state, entry.seq
        piece = st.missing_at(chain.gw, seq)
        if piece is not None:
            a, b, explained = piece
            st.drop_missing(chain.gw, a)
            for lo, hi in ((a, seq - 1), (seq + 1, b)):
                if lo <= hi:
                    st.put_missing(chain.gw, lo, hi, explained)
            self._c["gaps_explained" if explained else "gaps_unexplained"] -= 1
        elif seq < chain.start:
            if seq + 1 < chain.start:  # the seqs between it and the old start are missing
                self._missing(chain, seq + 1, chain.start - 1)
            chain.start = seq
        before = st.seen(chain.gw, seq - 1)
        self._link(chain, before[0] if before else None, entry)
        assert chain.next_seq is not None
        if seq + 1 < chain.next_seq:
            after = st.seen(chain.gw, seq + 1)
            if after is not None:
                # that link was counted unchecked when ``after`` was linked behind a gap / as start
                self._c["links_unchecked"] -= 1
                self._link(chain, entry.digest, _Entry(seq + 1, after[0], after[1]))
        elif seq + 1 == chain.next_seq:
            chain.last_digest = entry.digest  # the next one linked gets its link checked

    # -- results ---------------------------------------------------------------------------------

    def _problem(self, text: str) -> None:
        if not self._quiet:
            log.warning("verify_problem %s", text)
        self.state.add_event("problem", text)

    def commit(self) -> None:
        """Make everything fed so far durable (a file state): counters, chains, windows."""
        for chain in self._chains.values():
            if chain.dirty:
                self.state.save_chain(chain.gw, chain.next_seq, chain.last_digest, chain.start)
                chain.dirty = False
        self.state.save_counters(self._c)
        self.state.commit()

    def flush(self) -> None:
        """Link everything still waiting in the reorder windows (the stream has ended)."""
        for chain in self._chains.values():
            while chain.pending:
                self._skip(chain)
                chain.dirty = True

    def summary(self) -> VerifyReport:
        """Report as if the stream ended now (what still waits in a reorder window is given up),
        without changing the state: feeding may continue and a late batch still fills in."""
        self.commit()
        chains, counters = copy.deepcopy(self._chains), dict(self._c)
        self.state.savepoint()
        self._quiet = True
        try:
            self.flush()
            ranges = self.state.open_missing(MAX_PROBLEMS)
            problems = self.state.events("problem")
            notices = self.state.events("notice")
            c = dict(self._c)
        finally:
            self._quiet = False
            self.state.rollback_savepoint()
            self._chains, self._c = chains, counters
        for gw, a, b in ranges:
            if len(problems) < MAX_PROBLEMS:
                problems.append(f"unexplained_gap gateway={gw} seqs={a}..{b}")
        return VerifyReport(
            **c,
            gateways=tuple(sorted(self._chains)),
            unexplained=tuple(ranges),
            problems=tuple(problems),
            notices=tuple(notices),
        )
