"""Generates the worked example of docs/wire-format.md from a fixed test key.

    python -m tests.trust.wire_example            # print the generated section
    python -m tests.trust.wire_example --write    # replace it in docs/wire-format.md

test_wire_doc.py fails when the document and today's encoder disagree.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from pathlib import Path

import cbor2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.readings import Quality, Reading
from edge_agent.trust.batch import BatchSigner, ChainHead, SignedBatch
from edge_agent.trust.cose import parse1

DOC = Path(__file__).resolve().parents[2] / "docs" / "wire-format.md"
BEGIN = "<!-- BEGIN GENERATED EXAMPLE (python -m tests.trust.wire_example --write) -->"
END = "<!-- END GENERATED EXAMPLE -->"
SEED = bytes(range(32))  # the example key: seed 00 01 02 .. 1f. Never use it for anything real.
T0 = 1_763_776_800_000_000_000  # 2025-11-22T02:00:00Z in ns
M0 = 86_400_000_000_000  # one day of uptime, monotonic ns


def example_batches() -> tuple[SignedBatch, SignedBatch]:
    signer = BatchSigner(Ed25519PrivateKey.from_private_bytes(SEED), "gw-0042", "b7e1")
    bad_door = Reading(
        "cab-3", "door", None, "", T0 + 3_000_000, M0 + 3_000_000, Quality.BAD, "timeout", True
    )
    readings = [
        Reading("pole-17", "lux", 12.5, "lx", T0 + 1_000, M0),
        Reading("pole-17", "energy", 5012, "Wh", T0 + 2_000_000, M0 + 2_000_000),
        bad_door,
    ]
    data = signer.sign_readings(
        ChainHead.genesis(), readings, created_ns=T0 + 5_000_000, clock_synced=True,
        created_mono_ns=M0 + 5_000_000,
    )  # fmt: skip
    gap = signer.sign_gap(
        ChainHead(7, data.digest), first_seq=3, last_seq=5, readings=600, t_first_ns=T0,
        t_last_ns=T0 + 3_000_000_000, reason="outbox_full", created_ns=T0 + 9_000_000_000,
        clock_synced=True, created_mono_ns=M0 + 9_000_000_000,
    )  # fmt: skip
    return data, gap


KEY_NAMES = {
    0: "version", 1: "kind (0 data, 1 gap)", 2: "gateway id", 3: "boot id", 4: "seq",
    5: "prev", 6: "created wall ns", 7: "created mono ns", 8: "clock synced",
    9: "string table", 10: "base mono ns", 11: "base offset ns", 12: "readings",
    13: "gap first seq", 14: "gap last seq", 15: "gap readings", 16: "gap t_first ns",
    17: "gap t_last ns", 18: "gap reason",
}  # fmt: skip
ROW = ("dev", "point", "unit", "value", "dt", "flags", "wadj", "reason")


def _hex(b: bytes, limit: int = 14) -> str:
    h = b.hex(" ")
    return h if len(b) <= limit else b[:limit].hex(" ") + " .."


def _show(value: object) -> str:
    if isinstance(value, bytes):
        return f"h'{value.hex()}'" if len(value) <= 8 else f"h'{value[:6].hex()}..' ({len(value)})"
    if isinstance(value, list):
        return ", ".join(f"{ROW[i]}={v!r}" for i, v in enumerate(value))
    return repr(value)


def _items(buf: bytes, start: int, count: int) -> Iterator[tuple[int, int, object]]:
    """(offset, end, value) of ``count`` consecutive CBOR items starting at ``start``."""
    fp = io.BytesIO(buf)
    fp.seek(start)
    dec = cbor2.CBORDecoder(fp)
    for _ in range(count):
        off = fp.tell()
        value = dec.decode()
        yield off, fp.tell(), value


def _head_len(b: int) -> int:
    return 1 + {24: 1, 25: 2, 26: 4, 27: 8}.get(b & 0x1F, 0)


def annotate_payload(payload: bytes, base: int) -> list[str]:
    lines: list[str] = []

    def line(off: int, raw: bytes, what: str) -> None:
        lines.append(f"{base + off:04x}  {_hex(raw):<44} {what}".rstrip())

    n = payload[0] & 0x1F
    line(0, payload[:1], f"map({n})")
    pos = 1
    for _ in range(n):
        (k_off, _, key), (v_off, v_end, value) = _items(payload, pos, 2)
        if isinstance(value, list) and value:
            hl = _head_len(payload[v_off])
            name = KEY_NAMES.get(key, "?")  # type: ignore[call-overload]
            line(k_off, payload[k_off : v_off + hl], f"{key} {name}: array({len(value)})")
            for off, end, item in _items(payload, v_off + hl, len(value)):
                line(off, payload[off:end], f"   {_show(item)}")
        else:
            name = KEY_NAMES.get(key, "?")  # type: ignore[call-overload]
            line(k_off, payload[k_off:v_end], f"{key} {name}: {_show(value)}")
        pos = v_end
    return lines


def annotate(batch: SignedBatch) -> list[str]:
    msg = batch.cose
    _, protected, payload, _ = parse1(msg)
    p_off = msg.index(payload, 2 + 1 + len(protected) + 1)
    out = [
        f"0000  {_hex(msg[:2]):<44} tag 18 (COSE_Sign1), array(4)",
        f"0002  {_hex(msg[2:3] + protected):<44} protected bstr(21): {{1: -8, 4: kid}}",
        f"{3 + len(protected):04x}  {'a0':<44} unprotected: {{}}",
        f"{3 + len(protected) + 1:04x}  {_hex(msg[3 + len(protected) + 1 : p_off]):<44} "
        f"payload bstr({len(payload)})",
    ]
    out += annotate_payload(payload, p_off)
    sig_off = len(msg) - 64 - 2
    out.append(f"{sig_off:04x}  {_hex(msg[sig_off : sig_off + 2]):<44} signature bstr(64)")
    return out


def _wrap(b: bytes) -> list[str]:
    return [b[i : i + 32].hex() for i in range(0, len(b), 32)]


def generate() -> str:
    data, gap = example_batches()
    kid = parse1(data.cose)[0]
    parts = [
        BEGIN,
        "",
        f"Key: Ed25519 seed `{SEED.hex()}`, kid `{kid.hex()}`.",
        "",
        f"### Data batch: seq 1 (genesis), 3 readings, {len(data.cose)} bytes",
        "",
        "```",
        *annotate(data),
        "```",
        "",
        "Complete message (hex):",
        "",
        "```",
        *_wrap(data.cose),
        "```",
        "",
        f"SHA-256 of it (the `prev` of seq 2): `{data.digest.hex()}`",
        "",
        f"### Gap notice: seq 8 says seqs 3..5 (600 readings) were dropped, {len(gap.cose)} bytes",
        "",
        "```",
        *annotate(gap),
        "```",
        "",
        "Complete message (hex):",
        "",
        "```",
        *_wrap(gap.cose),
        "```",
        "",
        END,
    ]
    return "\n".join(parts)


def doc_section(text: str) -> str:
    a, b = text.index(BEGIN), text.index(END)
    return text[a : b + len(END)]


def main(argv: list[str]) -> int:
    section = generate()
    if "--write" in argv:
        text = DOC.read_text()
        DOC.write_text(text.replace(doc_section(text), section))
    else:
        print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
