"""docs/wire-format.md's bundle and result tables say what the code encodes: every key, its name
and its CBOR type, and nothing the code writes is missing from them."""

from __future__ import annotations

import re
from pathlib import Path

import cbor2

from edge_agent.rollout.bundle import Bundle, encode_bundle
from edge_agent.rollout.results import RolloutResult, encode_result

DOC = Path(__file__).resolve().parents[2] / "docs" / "wire-format.md"
ROW = re.compile(r"^\| (\d+) \| (\w+) \| ([^|]+) \|", re.M)


def table(after: str) -> dict[int, tuple[str, str]]:
    text = DOC.read_text()
    start = text.index(after)
    block = text[start:text.index("\n\n", text.index("| key |", start))]
    return {int(k): (name, kind.strip()) for k, name, kind in ROW.findall(block)}


KINDS = {"uint": int, "int": int, "tstr": str, "bstr": bytes, "float": float, "map": dict}


def check(doc: dict[int, tuple[str, str]], encoded: dict[int, object]) -> None:
    assert set(encoded) <= set(doc), set(encoded) - set(doc)
    for key, value in encoded.items():
        name, kind = doc[key]
        base = kind.split()[0]
        if base.startswith("["):
            assert isinstance(value, list), (key, name)
        elif base.startswith("{"):
            assert isinstance(value, dict), (key, name)
        else:
            assert isinstance(value, KINDS[base]), (key, name, kind, value)


def test_bundle_table() -> None:
    doc = table("## Configuration bundles")
    assert [doc[k][0] for k in sorted(doc)] == ["v", "kind", "ver", "iat", "nbf", "exp", "gws",
                                                "sel", "cfg", "prof", "win", "ratio", "note"]
    for b in (Bundle(3, 1, 1, 2, "x", {"p": "y"}, ("gw",), note="n"),
              Bundle(3, 1, 1, 2, "x", {}, selector={"a": "b"})):
        check(doc, cbor2.loads(encode_bundle(b)))


def test_result_table() -> None:
    doc = table("| 1 | v | uint | 1 |\n| 2 | kind | tstr | `\"edge-agent/config-result\"`")
    r = RolloutResult("gw", 3, "rolled_back", "devices_worse", 5, b"k", b"h", "d", {"up": 1})
    encoded = cbor2.loads(encode_result(r))
    assert set(encoded) == set(doc)
    check(doc, encoded)
