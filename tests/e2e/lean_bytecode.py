"""The installed tree's bytecode is lean (scripts/lean_pyc.py), checked at its final place by the
installed interpreter itself: every pyc of the production set is the one import loads (valid for
its source), holds none of the source's docstrings but those the code reads, no column table, and
every assert of the source; `edge-agent` prints the same man page as this checkout's; a source
edited after the install is compiled from the source again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support_installed import at_final_place

FINAL_VENV = "/opt/edge-agent/venv"
SITE = "lib/python3.11/site-packages"
EDITED = "edge_agent/poll/engine.py"

# run by the installed interpreter (-I): per top-level package of the production set, what its
# pycs hold; then how the daemon's modules import
PROBE = r"""
import ast, dis, importlib.util, json, marshal, os, sys, sysconfig
site = sysconfig.get_paths()["purelib"]

def codes(c):
    yield c
    for k in c.co_consts:
        if hasattr(k, "co_code"):
            yield from codes(k)

out = {}
for top in sys.argv[1:]:
    got = out[top] = {"modules": 0, "stale": [], "docstrings": [], "columns": 0,
                      "asserts_source": 0, "asserts_pyc": 0}
    for dirpath, dirs, files in os.walk(os.path.join(site, top)):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(dirpath, name)
            source = open(path, encoding="utf-8").read()
            cached = importlib.util.cache_from_source(path)
            with open(cached, "rb") as f:
                head, code = f.read(16), marshal.loads(f.read())
            st = os.stat(path)
            if head[:4] != importlib.util.MAGIC_NUMBER or (
                    int.from_bytes(head[8:12], "little"), int.from_bytes(head[12:16], "little")
                    ) != (int(st.st_mtime) & 0xFFFFFFFF, st.st_size & 0xFFFFFFFF):
                got["stale"].append(path)
            tree = ast.parse(source)
            consts = {k for c in codes(code) for k in c.co_consts if isinstance(k, str)}
            if "__doc__" not in source:
                docs = [ast.get_docstring(n, clean=False) for n in ast.walk(tree)
                        if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                          ast.AsyncFunctionDef))]
                got["docstrings"] += [f"{path}: {d[:40]!r}" for d in docs if d in consts]
            got["modules"] += 1
            got["columns"] += sum(1 for c in codes(code) for p in c.co_positions()
                                  if p[2] is not None)
            got["asserts_source"] += sum(isinstance(n, ast.Assert) for n in ast.walk(tree))
            got["asserts_pyc"] += sum(i.opname == "LOAD_ASSERTION_ERROR"
                                      for c in codes(code) for i in dis.get_instructions(c))
import edge_agent.service.daemon, edge_agent.poll.engine as engine, edge_agent.cli.common as common
out["imported"] = {"engine_doc": engine.__doc__, "common_doc": bool(common.__doc__),
                   "engine_cached": engine.__cached__}
print(json.dumps(out))
"""


def _probe(root: Path, cwd: Path) -> dict[str, Any]:
    """PROBE's answer (-B: writes no pyc)."""
    res = subprocess.run([*at_final_place(root), f"{FINAL_VENV}/bin/python", "-I", "-B", "-c",
                          PROBE, "edge_agent", "firmware_bridge", "paho", "cbor2", "serial"],
                         capture_output=True, text=True, timeout=120, check=False, cwd=cwd,
                         env={"PATH": "/usr/bin:/bin:/usr/sbin:/sbin"})
    assert res.returncode == 0, res.stderr[-3000:]
    got: dict[str, Any] = json.loads(res.stdout)
    return got


def assert_lean_bytecode(root: Path, work: Path, dev_root: Path) -> None:
    got = _probe(root, work)
    imported = got.pop("imported")
    for top, lean in got.items():
        assert lean["modules"] > 0 and lean["stale"] == [], (top, lean["stale"])
        # cli/common's module docstring stays: cmd_completion reads it (the man page)
        docs = [d for d in lean["docstrings"] if "/edge_agent/cli/common.py: " not in d]
        assert docs == [] and lean["columns"] == 0, (top, lean)
        # every assert is there (the compiler may duplicate one, e.g. in a finally: block)
        assert lean["asserts_pyc"] >= lean["asserts_source"], (top, lean)
    assert got["edge_agent"]["asserts_source"] > 0
    assert imported["engine_doc"] is None and imported["common_doc"], imported
    # the CLI reads its docstrings at run time: its man page is this checkout's
    dev = subprocess.run([sys.executable, "-m", "edge_agent.cli.main", "completion", "man"],
                         capture_output=True, text=True, timeout=60, check=True, cwd=dev_root)
    assert (root / "usr/local/share/man/man1/edge-agent.1").read_text() == dev.stdout
    # an edited source: compiled from the source again (its docstring back), then restored
    edited = root / "opt/edge-agent/venv" / SITE / EDITED
    text, st = edited.read_bytes(), edited.stat()
    try:
        edited.write_bytes(text + b"# edited after the install\n")
        again = _probe(root, work)["imported"]
        assert again["engine_doc"] and again["engine_doc"].strip(), again
    finally:
        edited.write_bytes(text)
        os.utime(edited, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert _probe(root, work)["imported"]["engine_doc"] is None


# run by the installed interpreter (-I, the unit's Environment=) at the final place: import every
# edge_agent module (the daemon's set and more), then where each stdlib module came from
STDLIB_PROBE = r"""
import ast, importlib, json, os, sys, types
from edge_agent.platform.lean_stdlib import LeanLoader, lean_code, stdlib_dir, tree_dir
from edge_agent.cli.doctor_unit import check_lean_stdlib
import edge_agent
top = os.path.dirname(edge_agent.__file__)
for dirpath, dirs, files in os.walk(top):
    for name in files:
        if name.endswith(".py") and name != "__main__.py":
            rel = os.path.relpath(os.path.join(dirpath, name), os.path.dirname(top))[:-3]
            importlib.import_module(rel.replace(os.sep, ".").removesuffix(".__init__"))
std, tree = stdlib_dir(), tree_dir()
out = {"tree": tree, "stdlib": std, "lean": [], "standard": [], "docstrings": [],
       "doctor": check_lean_stdlib().as_dict()}
for name, m in sorted(sys.modules.items()):
    f, spec = getattr(m, "__file__", None), getattr(m, "__spec__", None)
    if not (isinstance(f, str) and f.startswith(std + os.sep) and f.endswith(".py")
            and getattr(spec, "origin", None) == f):
        continue
    ours = isinstance(spec.loader, LeanLoader) and lean_code(f, std, tree) is not None
    out["lean" if ours else "standard"].append(name)
    source = open(f, "rb").read()
    if ours and b"__doc__" not in source:  # lean_pyc drops every docstring of such a module
        if m.__doc__:
            out["docstrings"].append(name)
        out["docstrings"] += [f"{name}.{k}" for k, v in vars(m).items()
                              if isinstance(v, types.FunctionType) and v.__module__ == name
                              and v.__doc__]
print(json.dumps(out))
"""
# a stdlib module the production set imports, "upgraded" under the tree: same text, new mtime
UPGRADED = "base64.py"
# the interpreter reads these before site.py runs the .pth: Debian's pycs, always
BEFORE_SITE = {"encodings", "encodings.aliases", "encodings.utf_8"}


def _stdlib_probe(root: Path, cwd: Path, *,
                  over: tuple[Path, str] | None = None) -> dict[str, Any]:
    """STDLIB_PROBE's answer; ``over``: (a file, the stdlib file it is mounted on first, in this
    namespace only)."""
    mount = ["sh", "-c", 'set -e; mount --bind "$1" "$2"; shift 2; exec "$@"', "sh",
             str(over[0]), over[1]] if over is not None else []
    res = subprocess.run([*at_final_place(root), *mount, f"{FINAL_VENV}/bin/python", "-I", "-B",
                          "-c", STDLIB_PROBE], capture_output=True, text=True, timeout=120,
                         check=False, cwd=cwd, env={"PATH": "/usr/bin:/bin:/usr/sbin:/sbin",
                                                    **unit_environment()})
    assert res.returncode == 0, res.stderr[-3000:]
    got: dict[str, Any] = json.loads(res.stdout)
    return got


def unit_environment() -> dict[str, str]:
    from tests.sandbox.unit import UnitSandbox

    unit = Path(__file__).resolve().parents[2] / "systemd" / "edge-agent.service"
    return dict(UnitSandbox.load(unit).environment)


def assert_lean_stdlib(root: Path, work: Path) -> None:
    """Debian's stdlib as the daemon loads it: every module from the install's lean tree (but the
    three site.py itself needs), without the docstrings lean_pyc drops; a stdlib source newer than
    its lean pyc (python3 upgraded) loads the standard way, and doctor says so."""
    got = _stdlib_probe(root, work)
    assert got["tree"] == f"{FINAL_VENV}/lean-stdlib"
    assert set(got["standard"]) <= BEFORE_SITE, got["standard"]
    assert len(got["lean"]) > 50 and "base64" in got["lean"], got["lean"]
    assert got["docstrings"] == [], got["docstrings"]
    assert got["doctor"]["status"] == "PASS", got["doctor"]
    debian = Path(got["stdlib"]) / UPGRADED  # the interpreter's: /usr/lib/python3.11 on a box
    upgraded = work / UPGRADED
    upgraded.write_bytes(debian.read_bytes())
    os.utime(upgraded, (debian.stat().st_mtime + 3600,) * 2)
    again = _stdlib_probe(root, work, over=(upgraded, str(debian)))
    assert "base64" in again["standard"] and "base64" not in again["lean"], again["standard"]
    assert set(again["standard"]) - {"base64"} <= BEFORE_SITE
    assert again["doctor"]["status"] == "WARN" and str(debian) in again["doctor"]["detail"]
    assert "scripts/install again" in again["doctor"]["hint"]
