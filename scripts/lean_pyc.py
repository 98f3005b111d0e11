"""Compile the installed venv's production set into lean bytecode (scripts/install runs this).

``VPY -I -X no_debug_ranges scripts/lean_pyc.py SITE [--final DIR] DIST...`` compiles every module
of the distributions DIST and their requirements (the production set: edge-agent and what it
needs, never pip/setuptools) into the STANDARD ``__pycache__/NAME.cpython-3XX.pyc`` that Python's
import loads anyway, from code without docstrings and without column tables:

* docstrings: an AST pass drops the docstring statement of every module, class and function
  (a body left empty gets ``pass``; line numbers stay those of the source); a dataclass's
  becomes ``" "`` (else dataclasses makes one, ``Name(signature)``, for each). A module whose
  source names ``__doc__`` keeps its own docstring when it only reads its module ``__doc__`` (the
  CLI's argparse descriptions), all of them when it reads an attribute ``X.__doc__`` or mentions
  it in text; a module ``X.__doc__`` names through an import keeps its module docstring
  (``common.__doc__``: the man page's EXIT STATUS).
* column tables: code compiled in a process run with ``-X no_debug_ranges`` carries line numbers
  only (tracebacks lose the ``^^^`` carets, nothing else); marshal keeps that.
* asserts stay: optimization level 0, the plain ``.pyc`` name.

``--stdlib TREE``: the stdlib modules the production set imports instead (a fresh interpreter
imports every module of DIST and every stdlib module the production set names in an import
statement, lazy ones included; what it then holds under the stdlib directory), compiled the same
way into ``TREE/REL.pyc`` for ``STDLIB/REL.py`` (the tree replaced whole): Debian's own pycs are
dpkg's; edge_agent/platform/lean_stdlib.py loads these.

The pycs are timestamp-validated against the source (its mtime and size, as py_compile writes
them): a source edited or upgraded later no longer matches, and Python recompiles it from the
source as usual. ``--final DIR``: the file names the code objects carry (``co_filename``,
tracebacks) are under DIR instead of SITE (a tree built under ``scripts/install --root``).
Prints one line: modules compiled, docstrings dropped.
"""

from __future__ import annotations

import argparse
import ast
import importlib.metadata as md
import importlib.util
import json
import marshal
import os
import re
import shutil
import subprocess
import sys
import types
from collections.abc import Callable
from pathlib import Path

SEEDS = frozenset({"pip", "setuptools", "wheel"})  # the venv's own, never the production set


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(names: list[str], path: list[str]) -> list[md.Distribution]:
    """The distributions ``names`` (requirement strings: extras as given) and their requirements,
    found on ``path``."""
    from pip._vendor.packaging.requirements import Requirement

    dists = {norm(d.metadata["Name"]): d for d in md.distributions(path=path)}
    seen: dict[str, md.Distribution] = {}
    todo = [(norm(r.name), set(r.extras)) for r in map(Requirement, names)]
    while todo:
        name, extras = todo.pop()
        if name in SEEDS or name in seen or name not in dists:
            continue
        seen[name] = dists[name]
        for text in dists[name].requires or []:
            req = Requirement(text)
            if req.marker is None or any(req.marker.evaluate({"extra": e})
                                         for e in (extras or {""})):
                todo.append((norm(req.name), set(req.extras)))
    return list(seen.values())


def _is_doc(stmt: ast.stmt) -> bool:
    return (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)
            and isinstance(stmt.value.value, str))


# what a dataclass's dropped docstring becomes: dataclasses gives a class without a docstring one
# of its own, ``Name(signature)`` (inspect.signature at import, a string held for ever: ~6.5 KiB
# on the daemon's 33 documented dataclasses); a one-character string is CPython's shared object
DATACLASS_DOC = " "


def _is_dataclass(node: ast.ClassDef) -> bool:
    """``node`` is decorated ``@dataclass``, ``@dataclass(...)`` or ``@dataclasses.dataclass``."""
    for d in node.decorator_list:
        f = d.func if isinstance(d, ast.Call) else d
        if (isinstance(f, ast.Name) and f.id == "dataclass") or (
                isinstance(f, ast.Attribute) and f.attr == "dataclass"):
            return True
    return False


def _drop_doc(node: ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    if not node.body or not _is_doc(node.body[0]):
        return 0
    if isinstance(node, ast.ClassDef) and _is_dataclass(node):
        node.body[0] = ast.copy_location(
            ast.Expr(ast.copy_location(ast.Constant(DATACLASS_DOC), node.body[0])), node.body[0])
        return 1
    doc = node.body.pop(0)
    if not node.body and not isinstance(node, ast.Module):
        node.body.append(ast.copy_location(ast.Pass(), doc))
    return 1


def doc_readers(tree: ast.Module, source: str) -> tuple[str, list[str]]:
    """How the module reads docstrings: ``"none"``, ``"module"`` (its own ``__doc__`` only) or
    ``"all"``; and the names ``X`` it reads ``X.__doc__`` of. Only reads count: setting one
    (``X.__doc__ = ...``, a ``"__doc__"`` key of a class namespace), importing one
    (``from _operator import __doc__``), a comment or a docstring naming it read nothing; an
    attribute read ``X.__doc__`` or any other string naming it (``getattr(f, "__doc__")``,
    generated code) keeps them all."""
    if "__doc__" not in source:
        return "none", []
    docs = {id(n.body[0]) for n in ast.walk(tree)
            if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and n.body and _is_doc(n.body[0])}
    keys = {id(k) for n in ast.walk(tree) if isinstance(n, ast.Dict) for k in n.keys}
    texts = {id(s.value) for s in ast.walk(tree) if isinstance(s, ast.Expr) and id(s) in docs}
    module = everything = False
    attrs = []
    for n in ast.walk(tree):
        if isinstance(n, ast.Name) and n.id == "__doc__" and isinstance(n.ctx, ast.Load):
            module = True
        elif isinstance(n, ast.Attribute) and n.attr == "__doc__" and isinstance(n.ctx, ast.Load):
            everything = True
            if isinstance(n.value, ast.Name):
                attrs.append(n.value.id)
        elif (isinstance(n, ast.Constant) and isinstance(n.value, str) and "__doc__" in n.value
              and id(n) not in texts and not (n.value == "__doc__" and id(n) in keys)):
            everything = True
    return ("all" if everything else "module" if module else "none"), attrs


def imported_modules(tree: ast.Module, module: str, is_pkg: bool) -> dict[str, str]:
    """Name bound by an import in ``module`` -> the module it may name (``from P import X``:
    ``P.X``)."""
    package = module if is_pkg else module.rpartition(".")[0]
    bound: dict[str, str] = {}
    for n in ast.walk(tree):
        if isinstance(n, ast.Import):
            for a in n.names:
                if a.asname:
                    bound[a.asname] = a.name
        elif isinstance(n, ast.ImportFrom):
            base = n.module or ""
            if n.level:
                parts = package.split(".")
                up = ".".join(parts[:len(parts) - n.level + 1])
                base = f"{up}.{base}" if base else up
            for a in n.names:
                bound[a.asname or a.name] = f"{base}.{a.name}"
    return bound


def strip(tree: ast.Module, keep: str) -> int:
    """Drop the docstrings of ``tree`` (``keep``: "none", "module" or "all"); how many."""
    if keep == "all":
        return 0
    dropped = 0 if keep == "module" else _drop_doc(tree)
    for n in ast.walk(tree):
        if isinstance(n, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            dropped += _drop_doc(n)
    return dropped


def pyc(code: types.CodeType, source: Path) -> bytes:
    """A timestamp-validated pyc of ``code`` for ``source`` (py_compile's header)."""
    st = source.stat()
    return b"".join((importlib.util.MAGIC_NUMBER, (0).to_bytes(4, "little"),
                     (int(st.st_mtime) & 0xFFFFFFFF).to_bytes(4, "little"),
                     (st.st_size & 0xFFFFFFFF).to_bytes(4, "little"), marshal.dumps(code)))


def modules(dists: list[md.Distribution], site: Path) -> dict[str, Path]:
    """Module name -> source file of every module the distributions install under ``site``."""
    found: dict[str, Path] = {}
    for d in dists:
        for f in d.files or []:
            p = Path(str(d.locate_file(f)))
            if f.suffix != ".py" or "__pycache__" in f.parts or not p.is_file():
                continue
            try:
                rel = p.relative_to(site)
            except ValueError:  # a script installed into bin/
                continue
            parts = list(rel.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            if parts and all(x.isidentifier() for x in parts):
                found[".".join(parts)] = p
    return found


def compile_lean(site: Path, final: Path, mods: dict[str, Path],
                 out_of: Callable[[Path], Path] | None = None) -> tuple[int, int]:
    """Compile ``mods`` as the module doc says into ``out_of(source)`` (default: the standard
    ``__pycache__`` pyc); (modules, docstrings dropped)."""
    trees: dict[str, tuple[ast.Module, str]] = {}
    keep: dict[str, str] = {}
    for name, path in mods.items():
        source = importlib.util.decode_source(path.read_bytes())
        tree = ast.parse(source, str(path))
        how, attrs = doc_readers(tree, source)
        keep[name] = max(keep.get(name, "none"), how, key=("none", "module", "all").index)
        bound = imported_modules(tree, name, path.name == "__init__.py")
        for x in attrs:
            target = bound.get(x)
            if target in mods and keep.get(target) != "all":
                keep[target] = "module"
        trees[name] = (tree, source)
    dropped = 0
    for name, (tree, _) in trees.items():
        path = mods[name]
        dropped += strip(tree, keep[name])
        code = compile(tree, str(final / path.relative_to(site)), "exec", dont_inherit=True,
                       optimize=0)
        out = (out_of(path) if out_of is not None
               else Path(importlib.util.cache_from_source(str(path))))
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.{os.getpid()}")
        tmp.write_bytes(pyc(code, path))
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    return len(trees), dropped


# run by the venv's interpreter (-I): import ``argv[1:]`` (each may fail: another platform's, an
# optional dependency's), then name the stdlib sources now in sys.modules (frozen ones aside)
STDLIB_PROBE = r"""
import importlib, json, os, sys
stdlib = os.path.dirname(os.__file__)
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except BaseException:
        pass
found = {}
for name, m in list(sys.modules.items()):
    f, spec = getattr(m, "__file__", None), getattr(m, "__spec__", None)
    if (isinstance(f, str) and f.startswith(stdlib + os.sep) and f.endswith(".py")
            and getattr(spec, "origin", None) == f):
        found[name] = f
print("\nSTDLIB " + json.dumps(found))
"""
# stdlib modules never imported to find the closure: they act when imported
NEVER = frozenset({"antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo"})


def stdlib_names(sources: list[Path]) -> set[str]:
    """The stdlib modules ``sources`` name in an import statement (also inside a function: the
    daemon's lazy paths), ``from P import X`` as ``P`` and ``P.X``."""
    names: set[str] = set()
    for path in sources:
        tree = ast.parse(importlib.util.decode_source(path.read_bytes()), str(path))
        for n in ast.walk(tree):
            if isinstance(n, ast.Import):
                names |= {a.name for a in n.names}
            elif isinstance(n, ast.ImportFrom) and n.level == 0 and n.module:
                names |= {n.module} | {f"{n.module}.{a.name}" for a in n.names}
    return {x for x in names if x.split(".")[0] in sys.stdlib_module_names
            and x.split(".")[0] not in NEVER and not x.endswith("__main__")}


def stdlib_closure(own: list[str], sources: list[Path]) -> dict[str, Path]:
    """Module name -> source of the stdlib modules a fresh interpreter holds after importing every
    module ``own`` and every stdlib module ``sources`` name (one name per file)."""
    res = subprocess.run([sys.executable, "-I", "-c", STDLIB_PROBE, *own,
                          *sorted(stdlib_names(sources))],
                         capture_output=True, text=True, timeout=600, check=True)
    found: dict[str, str] = json.loads(res.stdout.rpartition("\nSTDLIB ")[2])
    by_file: dict[str, str] = {}
    for name, f in sorted(found.items()):  # os.path is posixpath: its own name wins
        stem = Path(f).parent.name if f.endswith("__init__.py") else Path(f).stem
        if f not in by_file or name.rpartition(".")[2] == stem:
            by_file[f] = name
    return {name: Path(f) for f, name in by_file.items()}


def compile_stdlib(tree: Path, site: Path, dists: list[str]) -> tuple[int, int]:
    """The stdlib closure of the production set (``dists`` on ``site``) as lean pycs in ``tree``
    (``REL.pyc`` for ``STDLIB/REL.py``; the tree replaced whole); (modules, docstrings dropped)."""
    every = closure(dists, [str(site)])
    tops = {norm(re.split(r"[\[<>=!~;\s]", d, maxsplit=1)[0]) for d in dists}
    own = [m for m in modules([d for d in every if norm(d.metadata["Name"]) in tops], site)
           if not m.endswith("__main__")]
    mods = stdlib_closure(sorted(own), list(modules(every, site).values()))
    stdlib = Path(os.__file__).parent
    new, old = tree.with_name(tree.name + ".new"), tree.with_name(tree.name + ".old")
    shutil.rmtree(new, ignore_errors=True)
    n, dropped = compile_lean(stdlib, stdlib, mods,
                              lambda p: new / p.relative_to(stdlib).with_suffix(".pyc"))
    shutil.rmtree(old, ignore_errors=True)
    if tree.exists():
        tree.rename(old)
    new.rename(tree)
    shutil.rmtree(old, ignore_errors=True)
    return n, dropped


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="lean_pyc.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("site", type=Path, help="the venv's site-packages")
    ap.add_argument("dists", nargs="+", help="distributions (requirement strings)")
    ap.add_argument("--final", type=Path, help="the site-packages' path on the box")
    ap.add_argument("--stdlib", type=Path, metavar="TREE",
                    help="compile the stdlib modules the production set imports into TREE "
                    "instead (edge_agent/platform/lean_stdlib.py loads them)")
    args = ap.parse_args(argv)
    if sys.flags.optimize:
        ap.error("run without -O: asserts stay")
    if sys._xoptions.get("no_debug_ranges") is None and not os.environ.get("PYTHONNODEBUGRANGES"):
        ap.error("run with -X no_debug_ranges: the code objects must carry no column table")
    site = args.site.resolve()
    if args.stdlib is not None:
        n, dropped = compile_stdlib(args.stdlib.absolute(), site, args.dists)
        print(f"lean_pyc: {n} stdlib modules compiled into {args.stdlib} without docstrings "
              f"({dropped} dropped) or column tables")
        return 0
    mods = modules(closure(args.dists, [str(site)]), site)
    n, dropped = compile_lean(site, args.final or site, mods)
    print(f"lean_pyc: {n} modules compiled without docstrings ({dropped} dropped) or column "
          f"tables")
    return 0


if __name__ == "__main__":
    sys.exit(main())
