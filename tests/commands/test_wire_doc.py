"""docs/wire-format.md's command example is what the code produces today."""

from __future__ import annotations

import re
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.commands.model import (
    Action,
    Command,
    Result,
    decode_command,
    encode_command,
    encode_result,
)
from edge_agent.trust.cose import sign1, verify1
from edge_agent.trust.keys import kid_of

DOC = Path(__file__).resolve().parents[2] / "docs" / "wire-format.md"


def _hex_after(label: str, block: str) -> str:
    m = re.search(rf"^{re.escape(label)}.*?\n(?=\S)", block, re.S | re.M)
    assert m, label
    text = m.group(0)[len(label):]
    return "".join(re.findall(r"\b[0-9a-f]{2,}\b", text.split("(ok")[0]))


def test_command_example_matches_code() -> None:
    block = DOC.read_text().split("<!-- BEGIN COMMAND EXAMPLE")[1].split("<!-- END")[0]
    op = Ed25519PrivateKey.from_private_bytes(bytes(range(32, 64)))
    cmd = Command(bytes.fromhex("00112233445566778899aabbccddeeff"), 1_800_000_000,
                  1_800_000_300, 42, "gw-demo", Action.WRITE, "lamp-01", "dimming", 40)
    payload = encode_command(cmd)
    msg = sign1(payload, op, kid_of(op.public_key()))
    assert kid_of(op.public_key()).hex() in block
    assert _hex_after("command (166 B)", block) == msg.hex()
    assert len(msg) == 166 and len(payload) == 73
    _kid, got = verify1(msg, {kid_of(op.public_key()): op.public_key()})
    assert decode_command(got) == cmd
    res = Result(cmd.id, "gw-demo", True, "", 1_800_000_001_000_000_000,
                 kid_of(op.public_key()), 40)
    assert _hex_after("result payload", block) == encode_result(res).hex()
