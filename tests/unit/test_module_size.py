"""Small modules named for what they hold: no module of the code we ship or run over MAX_LINES.

Every ``*.py`` under edge_agent/, simulators/, benchmarks/ and firmware_bridge/ (the MicroPython
node included) counts, tests excepted. A module that grows past the limit is split along a real
seam into modules named for what they hold (docs/architecture.md names them), not trimmed by
packing lines.

``OVER`` lists modules known to be over the limit while their owner splits them, each with the
most lines it may have meanwhile: it may only shrink. An entry fails once its module is back
under the limit (remove it) and when the module grows past its figure.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TREES = ("edge_agent", "simulators", "benchmarks", "firmware_bridge")
MAX_LINES = 400
OVER: dict[str, int] = {}


def modules() -> list[Path]:
    found = []
    for tree in TREES:
        for path in sorted((ROOT / tree).rglob("*.py")):
            rel = path.relative_to(ROOT).parts
            if any(p.startswith(".") or p in ("build", "__pycache__") or p.endswith(".egg-info")
                   for p in rel):
                continue
            found.append(path)
    return found


def lines(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


def too_long(sizes: dict[str, int], over: dict[str, int], limit: int = MAX_LINES) -> list[str]:
    """One message per module over ``limit`` lines (or past its figure in ``over``) and per
    ``over`` entry that is stale (its module is under the limit now, or gone)."""
    bad = []
    for rel, n in sorted(sizes.items()):
        allowed = over.get(rel, limit)
        if n > allowed:
            bad.append(f"{rel}: {n} lines, over {allowed}: split it along a real seam into "
                       "modules named for what they hold")
    for rel, allowed in sorted(over.items()):
        now = sizes.get(rel)
        if now is None or now <= limit:
            bad.append(f"{rel}: listed in OVER ({allowed}) but "
                       + ("gone" if now is None else f"{now} lines now") + ": remove the entry")
    return bad


def test_no_module_is_over_the_limit() -> None:
    sizes = {str(p.relative_to(ROOT)): lines(p) for p in modules()}
    assert not too_long(sizes, OVER), "\n".join(too_long(sizes, OVER))


def test_the_scan_sees_every_tree() -> None:
    found = {p.relative_to(ROOT).parts[0] for p in modules()}
    assert found == set(TREES)
    assert len(modules()) > 150
    assert ROOT / "firmware_bridge" / "node" / "main.py" in modules()
    assert ROOT / "edge_agent" / "uplink" / "mqtt.py" in modules()


def test_the_check_fails_and_names_the_module() -> None:
    assert too_long({"edge_agent/a.py": 400, "simulators/b.py": 12}, {}) == []
    bad = too_long({"edge_agent/a.py": 401}, {})
    assert len(bad) == 1 and bad[0].startswith("edge_agent/a.py: 401 lines, over 400")
    # a listed module may not grow, and its entry goes once it is under the limit
    assert too_long({"x.py": 450}, {"x.py": 450}) == []
    assert too_long({"x.py": 451}, {"x.py": 450})[0].startswith("x.py: 451 lines, over 450")
    assert "remove the entry" in too_long({"x.py": 380}, {"x.py": 450})[0]
    assert "gone" in too_long({}, {"x.py": 450})[0]


def test_lines_are_counted_like_wc(tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    f.write_text("a = 1\n" * 401)
    assert lines(f) == 401
    f.write_text("a = 1\n" * 400 + "b = 2")  # no final newline: still a line
    assert lines(f) == 401
