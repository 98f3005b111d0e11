"""Which known name a mistyped one meant: the one matcher behind every "did you mean" (config and
profile keys, devices, points, classes, buses, commands and choices of the CLI).

Names are compared in a normal form first: lower case, numbers without leading zeros (``lamp-1``
is ``lamp-01``, ``Meter-007`` is ``meter-7``). A name equal in that form is the answer on its own;
otherwise names starting with the word and difflib's close matches are ranked by similarity of
their normal forms, best first.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_DIGITS = re.compile(r"\d+")


def normal(name: str) -> str:
    """``name`` lower-cased, each run of digits without its leading zeros."""
    return _DIGITS.sub(lambda m: str(int(m.group())), name.lower())


def closest(word: str, choices: Iterable[str], n: int = 3, cutoff: float = 0.6) -> list[str]:
    """Up to ``n`` of ``choices`` that ``word`` most likely meant, best first; [] for none."""
    names = sorted(set(choices))
    if not word or not names:
        return []
    key = normal(word)
    forms = {c: normal(c) for c in names}
    same = [c for c in names if forms[c] == key]
    if same:
        return same[:n]
    import difflib  # imported here: only a mistake needs it, the running daemon never does

    def similarity(c: str) -> float:
        return difflib.SequenceMatcher(None, key, forms[c]).ratio()

    candidates = {c for c in names if forms[c].startswith(key)}
    candidates |= {c for c in names if similarity(c) >= cutoff}
    if not candidates:  # a fragment of a longer name: "rate" for "flow_rate"
        candidates = {c for c in names if len(key) >= 3 and key in forms[c]}
    # best first; between equals the later name first, as difflib.get_close_matches orders them
    return sorted(candidates, key=lambda c: (similarity(c), c), reverse=True)[:n]
