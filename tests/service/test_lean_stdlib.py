"""edge_agent/platform/lean_stdlib.py on a scratch "stdlib" directory and lean tree, in fresh
interpreters: a lean pyc that matches its source is what import loads (here its code differs from
the source's, so the test can tell); one whose source changed (mtime, size), a corrupt one or
another interpreter's is never loaded (the standard path is); paths outside the stdlib directory
never reach the hook; -O and a missing tree leave the process alone; doctor warns about stale
ones. The installed tree, with Debian's real stdlib: tests/e2e/lean_bytecode.py."""

from __future__ import annotations

import importlib.util
import json
import marshal
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.cli.doctor_unit import check_lean_stdlib
from edge_agent.platform.lean_stdlib import PTH_LINE, TREE, path_hook, stale

SOURCES = {
    "leanmod.py": '"""Module doc."""\nX = "source"\n',
    "leanpkg/__init__.py": '"""Package doc."""\n',
    "leanpkg/sub.py": '"""Sub doc."""\nX = "source"\n',
}
LEAN = {"leanmod.py": 'X = "lean"\n', "leanpkg/__init__.py": "", "leanpkg/sub.py": 'X = "lean"\n'}

PROBE = r"""
import json, sys
std, venv = sys.argv[1], sys.argv[2]
sys.path.insert(0, std)
from edge_agent.platform import lean_stdlib
installed = lean_stdlib.install(venv, std)
import leanmod, leanpkg.sub
print(json.dumps({"installed": installed,
                  "mod": [leanmod.X, leanmod.__doc__, type(leanmod.__loader__).__name__],
                  "sub": [leanpkg.sub.X, leanpkg.sub.__doc__, leanpkg.__doc__]}))
"""


def pyc(code_text: str, source: Path, magic: bytes = importlib.util.MAGIC_NUMBER) -> bytes:
    st = source.stat()
    code = compile(code_text, str(source), "exec", dont_inherit=True)
    return b"".join((magic, bytes(4), (int(st.st_mtime) & 0xFFFFFFFF).to_bytes(4, "little"),
                     (st.st_size & 0xFFFFFFFF).to_bytes(4, "little"), marshal.dumps(code)))


@pytest.fixture
def scratch(tmp_path: Path) -> tuple[Path, Path]:
    """(a stdlib directory, a venv whose lean tree matches it)."""
    std, venv = tmp_path / "std", tmp_path / "venv"
    for rel, text in SOURCES.items():
        src = std / rel
        src.parent.mkdir(parents=True, exist_ok=True)
        src.write_text(text)
        os.utime(src, (1_700_000_000, 1_700_000_000))
        lean = (venv / TREE / rel).with_suffix(".pyc")
        lean.parent.mkdir(parents=True, exist_ok=True)
        lean.write_bytes(pyc(LEAN[rel], src))
    return std, venv


def probe(std: Path, venv: Path, *flags: str) -> dict[str, object]:
    res = subprocess.run([sys.executable, *flags, "-B", "-c", PROBE, str(std), str(venv)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0 and res.stderr == "", res.stderr
    got: dict[str, object] = json.loads(res.stdout)
    return got


def test_a_matching_lean_pyc_is_what_import_loads(scratch: tuple[Path, Path]) -> None:
    got = probe(*scratch)
    assert got == {"installed": True, "mod": ["lean", None, "LeanLoader"],
                   "sub": ["lean", None, None]}


@pytest.mark.parametrize("change", ["mtime", "size", "corrupt", "magic", "missing"])
def test_a_lean_pyc_that_does_not_match_is_never_loaded(scratch: tuple[Path, Path],
                                                        change: str) -> None:
    std, venv = scratch
    src, lean = std / "leanmod.py", venv / TREE / "leanmod.pyc"
    if change == "mtime":  # python3 upgraded: a new source (same text here), a new mtime
        os.utime(src, (1_700_000_100, 1_700_000_100))
    elif change == "size":
        src.write_text(SOURCES["leanmod.py"] + "# patched\n")
        os.utime(src, (1_700_000_000, 1_700_000_000))
    elif change == "corrupt":
        lean.write_bytes(lean.read_bytes()[:24] + b"\xff garbage")
    elif change == "magic":
        lean.write_bytes(pyc(LEAN["leanmod.py"], src, magic=b"\x00\x00\r\n"))
    else:
        lean.unlink()
    got = probe(std, venv)
    assert got["mod"] == ["source", "Module doc.", "LeanLoader"]  # the standard path's result
    assert got["sub"] == ["lean", None, None]  # the others still lean


def test_optimised_or_without_a_tree_the_process_is_left_alone(
        scratch: tuple[Path, Path], tmp_path: Path) -> None:
    std, venv = scratch
    assert probe(std, venv, "-O")["mod"] == ["source", "Module doc.", "SourceFileLoader"]
    got = probe(std, tmp_path / "no-venv")
    assert got["installed"] is False and got["mod"][0] == "source"  # type: ignore[index]


@pytest.mark.parametrize("flags", [(), ("-O",), ("-OO",)])
def test_the_pth_line_imports_nothing_under_O(flags: tuple[str, ...]) -> None:
    """site.py runs the .pth line at every start of the venv's interpreter: under -O it must not
    even import edge_agent (no module of it in sys.modules, no pyc written for it)."""
    check = "\nprint(sorted(m for m in sys.modules if m.startswith('edge_agent')))"
    res = subprocess.run([sys.executable, *flags, "-B", "-c", PTH_LINE + check],
                         capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0 and res.stderr == "", res.stderr
    imported = json.loads(res.stdout.replace("'", '"'))
    if flags:
        assert imported == []
    else:
        assert "edge_agent.platform.lean_stdlib" in imported


def test_the_hook_answers_for_the_stdlib_directory_only(scratch: tuple[Path, Path],
                                                        tmp_path: Path) -> None:
    std, _ = scratch
    hook = path_hook(str(std))
    assert hook(str(std)).path == str(std)
    assert hook(str(std / "leanpkg")).path == str(std / "leanpkg")
    (tmp_path / "stdother").mkdir()
    for other in (tmp_path / "stdother", tmp_path, std / "leanmod.py", std / "absent"):
        with pytest.raises(ImportError):
            hook(str(other))


def test_doctor_warns_about_stale_lean_bytecode(scratch: tuple[Path, Path],
                                                tmp_path: Path) -> None:
    std, venv = scratch
    ok = check_lean_stdlib(str(venv), str(std))
    assert ok is not None and ok.status == "PASS" and "3 stdlib modules" in ok.detail
    os.utime(std / "leanpkg" / "sub.py", (1_700_000_100, 1_700_000_100))
    (std / "leanmod.py").unlink()
    assert stale(str(venv), str(std)) == (3, [str(std / "leanmod.py"),
                                              str(std / "leanpkg" / "sub.py")])
    warn = check_lean_stdlib(str(venv), str(std))
    assert warn is not None and warn.status == "WARN", warn
    assert "2 of 3" in warn.detail and "leanpkg/sub.py" in warn.detail
    assert "scripts/install again" in warn.hint
    assert check_lean_stdlib(str(tmp_path / "dev-venv"), str(std)) is None
