"""scripts/lean_pyc.py on a real (small) distribution in a scratch site-packages: the pycs Python's
import loads carry no docstrings and no column table, keep the asserts and the docstrings the code
reads, name the final place, and a source edited afterwards is compiled from the source again."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "lean_pyc.py"
FINAL = "/opt/edge-agent/venv/lib/python3.11/site-packages"

FILES = {
    "demo_pkg/__init__.py": '"""The package."""\n\nfrom demo_pkg import common\n',
    "demo_pkg/common.py": '"""Exit codes: 0 ok."""\n\nX = 1\n',
    "demo_pkg/cli.py": ('"""Usage text read at run time."""\n\nimport argparse\n\n'
                        "from demo_pkg import common\n\n\ndef parser():\n"
                        "    return argparse.ArgumentParser(description=__doc__)\n\n\n"
                        "def exits():\n    return common.__doc__\n"),
    "demo_pkg/work.py": ('"""Module doc."""\n\nfrom __future__ import annotations\n\n\n'
                         'class Only:\n    """Only a docstring."""\n\n\n'
                         "class Point:\n    '''A point.'''\n\n    def norm(self):\n"
                         '        """Method doc."""\n        return 5\n\n\n'
                         'def empty():\n    """Nothing but this."""\n\n\n'
                         'async def later():\n    """Async doc."""\n\n\n'
                         'def checked(x):\n    """Checked."""\n    assert x > 0, "positive"\n'
                         "    return x\n"),
}

# run by a fresh interpreter with the scratch site on its path: what the imported modules hold
PROBE = """
import json, sys
sys.path.insert(0, sys.argv[1])
import demo_pkg.work as w, demo_pkg.cli as cli, demo_pkg.common as common, demo_pkg
def codes(c):
    yield c
    for k in c.co_consts:
        if hasattr(k, "co_code"):
            yield from codes(k)
try:
    w.checked(-1)
    asserted = False
except AssertionError as exc:
    asserted = str(exc)
code = w.checked.__code__
print(json.dumps({
    "docs": [w.__doc__, w.Only.__doc__, w.Point.__doc__, w.Point.norm.__doc__, w.empty.__doc__,
             w.later.__doc__, w.checked.__doc__, demo_pkg.__doc__],
    "calls": [w.empty(), w.Point().norm(), w.checked(2)],
    "kept": [cli.__doc__, cli.parser().description, cli.exits(), common.__doc__],
    "asserted": asserted, "filename": code.co_filename, "cached": w.__cached__,
    "columns": sum(1 for c in codes(code) for p in c.co_positions() if p[2] is not None),
    "lines": sorted({p[0] for p in code.co_positions() if p[0]}),
}))
"""


def site_with_dist(tmp: Path) -> Path:
    site = tmp / "site-packages"
    for name, text in FILES.items():
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        (site / name).write_text(text)
    info = site / "demo_pkg-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: demo-pkg\nVersion: 1.0\n")
    (info / "RECORD").write_text("".join(f"{n},,\n" for n in FILES) + "demo_pkg-1.0.dist-info/"
                                 "METADATA,,\ndemo_pkg-1.0.dist-info/RECORD,,\n")
    return site


def lean(site: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-I", *flags, str(SCRIPT), str(site), "demo-pkg",
                           "--final", FINAL], capture_output=True, text=True, timeout=60,
                          check=False)


def probe(site: Path) -> dict[str, Any]:
    """PROBE's answer (-B: writes no pyc)."""
    res = subprocess.run([sys.executable, "-I", "-B", "-c", PROBE, str(site)],
                         capture_output=True, text=True, timeout=60, check=False, cwd="/")
    assert res.returncode == 0, res.stderr
    got: dict[str, Any] = json.loads(res.stdout)
    return got


@pytest.mark.timeout(120)
def test_lean_pycs_are_what_import_loads(tmp_path: Path) -> None:
    site = site_with_dist(tmp_path)
    res = lean(site, "-X", "no_debug_ranges")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("lean_pyc: 4 modules compiled"), res.stdout
    got = probe(site)
    assert got["docs"] == [None] * 8  # module, class, method, function, async, package
    assert got["calls"] == [None, 5, 2]  # bodies left empty run (pass)
    usage, exits = "Usage text read at run time.", "Exit codes: 0 ok."
    assert got["kept"] == [usage, usage, exits, exits]  # read as __doc__ / common.__doc__
    assert got["asserted"] == "positive"  # optimization level 0: asserts kept
    cached = site / f"demo_pkg/__pycache__/work.{sys.implementation.cache_tag}.pyc"
    assert got["cached"] == str(cached)
    pyc = cached.read_bytes()
    assert f"{FINAL}/demo_pkg/work.py".encode() in pyc  # the place on the box
    assert str(site).encode() not in pyc
    assert got["columns"] == 0
    n = FILES["demo_pkg/work.py"].splitlines().index("def checked(x):") + 1
    assert got["lines"] == [n, n + 2, n + 3]  # the source's own line numbers

    # a source edited after the install: Python compiles it from the source again, as usual
    work = site / "demo_pkg/work.py"
    work.write_text(work.read_text() + "# edited\n")
    edited = probe(site)
    assert edited["docs"][0] == "Module doc." and edited["columns"] > 0
    assert edited["filename"] == str(work)


def test_it_refuses_to_compile_fat_or_without_asserts(tmp_path: Path) -> None:
    site = site_with_dist(tmp_path)
    fat = lean(site)
    assert fat.returncode == 2 and "no_debug_ranges" in fat.stderr
    assert lean(site, "-X", "no_debug_ranges", "-O").returncode == 2
    assert not list(site.rglob("*.pyc"))


def _lean_pyc_module() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("lean_pyc", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize(("source", "how"), [
    ('"""Doc."""\nX = 1\n', ("none", [])),
    # setting docstrings, a class namespace's "__doc__" key, importing one, a comment, a
    # docstring naming it: nothing read
    ('"""Shows f.__doc__."""\n# __doc__ here\nf.__doc__ = "x"\nd = {"__doc__": "t"}\n'
     "from _operator import __doc__\n", ("none", [])),
    ('"""Usage."""\nprint(__doc__)\n', ("module", [])),
    ("import common\nprint(common.__doc__)\n", ("all", ["common"])),
    ("f.__doc__ = g().__doc__\n", ("all", [])),  # copies a docstring
    ('getattr(f, "__doc__")\n', ("all", [])),
    ("NAMES = ('__name__', '__doc__')\n", ("all", [])),  # functools.WRAPPER_ASSIGNMENTS
])
def test_only_code_that_reads_a_docstring_keeps_them(source: str,
                                                     how: tuple[str, list[str]]) -> None:
    import ast

    assert _lean_pyc_module().doc_readers(ast.parse(source), source) == how


DATACLASSES = '''
import dataclasses
from dataclasses import dataclass


@dataclass
class A:
    """A's long docstring."""
    x: int


@dataclass(frozen=True, slots=True)
class B:
    """B's long docstring."""
    y: str = "b"


@dataclasses.dataclass
class C:
    """C's long docstring."""


class Plain:
    """Plain's long docstring."""
'''


def test_a_dataclass_gets_no_generated_docstring_for_the_one_dropped() -> None:
    """dataclasses gives a class without a docstring ``Name(signature)`` (inspect.signature at
    import, a string held for ever): a dataclass's dropped docstring is CPython's shared " "."""
    import ast

    lp = _lean_pyc_module()
    tree = ast.parse(DATACLASSES)
    assert lp.strip(tree, "none") == 4
    ns: dict[str, Any] = {}
    exec(compile(tree, "<dataclasses>", "exec", dont_inherit=True), ns)
    assert [ns[k].__doc__ for k in "ABC"] == [" ", " ", " "]
    assert ns["Plain"].__doc__ is None and ns["B"]().y == "b" and ns["A"](1).x == 1
    assert all(ns[k].__doc__ is ns["A"].__doc__ for k in "BC")  # one object, not one a class
