"""Debian's standard library as lean bytecode, loaded from a tree the install owns.

Debian's pycs of the stdlib (/usr/lib/python3.11/__pycache__, dpkg's, shared by every Python
program on the box) carry every docstring. ``scripts/install`` compiles the stdlib modules the
production set imports without docstrings (but those a module reads) and without column tables
into the venv's ``lean-stdlib/`` tree: ``REL.pyc`` for the source ``STDLIB/REL.py``, each with the
timestamp header py_compile writes (the source's mtime and size). It writes
``edge-agent-lean-stdlib.pth`` into site-packages: at every start of the venv's interpreter
(site.py, before the console script's first import) it calls ``install()``.

``install()`` puts a path hook in front of ``sys.path_hooks`` that answers for the stdlib
directory and its packages only: the usual FileFinder, whose source loader first tries the lean
pyc and else does exactly what SourceFileLoader does (Debian's pyc, or the source). A lean pyc is
used only when its magic number is this interpreter's and its header matches the source's stat
now: after ``apt`` upgrades python3, every changed module loads the standard way (correct, with
its docstrings) until the install is run again (``stale()``: `edge-agent doctor` says so). Any
error in this module falls back to the standard import; nothing is ever written. Under ``-O`` the
hook stays out, the .pth line not even importing this module (the lean pycs keep asserts).
Relocation-free: the tree is found from ``sys.prefix``, the stdlib from ``os.__file__``.
"""

# No `from __future__` and no typing import: what this module imports loads before the hook
# (typing alone would read re, enum, functools, collections, ... from Debian's pycs).
# the import system's own module (frozen, always loaded): importlib.machinery would read
# importlib/, warnings.py, ... from Debian's pycs before the hook is there
import _frozen_importlib_external as _bx
import _imp
import marshal
import os
import sys

TYPE_CHECKING = False

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import CodeType

TREE = "lean-stdlib"  # beside the venv's bin/ and lib/
PTH = "edge-agent-lean-stdlib.pth"
# (under -O not even imported: the process is left alone, no edge_agent in its sys.modules)
PTH_LINE = ("import sys; exec('if not sys.flags.optimize:\\n try:\\n  import "
            "edge_agent.platform.lean_stdlib as m\\n except Exception:\\n  pass\\n else:\\n"
            "  m.install()')\n")

_where: "tuple[str, str] | None" = None  # (stdlib dir, lean tree) once install() ran


def stdlib_dir() -> str:
    return os.path.dirname(os.__file__)


_CODE = type(stdlib_dir.__code__)  # types.CodeType without importing types


def tree_dir(prefix: "str | None" = None) -> str:
    return os.path.join(sys.prefix if prefix is None else prefix, TREE)


def lean_path(source: str, stdlib: str, tree: str) -> "str | None":
    """The lean pyc of the stdlib source ``source``, or None when it is not one."""
    if not source.startswith(stdlib + os.sep) or not source.endswith(".py"):
        return None
    return tree + source[len(stdlib):-3] + ".pyc"


def header_matches(data: bytes, st: os.stat_result) -> bool:
    """``data`` (a pyc) is for this interpreter and for the source whose stat is ``st``."""
    return (len(data) > 16 and data[:4] == _bx.MAGIC_NUMBER and data[4:8] == bytes(4)
            and int.from_bytes(data[8:12], "little") == int(st.st_mtime) & 0xFFFFFFFF
            and int.from_bytes(data[12:16], "little") == st.st_size & 0xFFFFFFFF)


def lean_code(source: str, stdlib: str, tree: str) -> "CodeType | None":
    """The code of ``source`` from its lean pyc, or None (none, stale, unreadable, anything)."""
    try:
        lean = lean_path(source, stdlib, tree)
        if lean is None:
            return None
        with open(lean, "rb") as f:
            data = f.read()
        if not header_matches(data, os.stat(source)):
            return None
        code = marshal.loads(memoryview(data)[16:])
        if type(code) is not _CODE:
            return None
        _imp._fix_co_filename(code, source)  # type: ignore[attr-defined]
        return code
    except Exception:  # any trouble: the standard loader decides
        return None


class LeanLoader(_bx.SourceFileLoader):
    """SourceFileLoader that takes the lean pyc when it is valid for the source."""

    def get_code(self, fullname: str) -> "CodeType | None":
        where = _where
        code = lean_code(self.path, *where) if where is not None else None
        return code if code is not None else super().get_code(fullname)


def path_hook(stdlib: str) -> "Callable[[str], _bx.FileFinder]":
    """A path hook for ``stdlib`` and the directories below it; ImportError for any other path
    (the next hook, the standard one, takes it)."""
    def hook(path: str) -> _bx.FileFinder:
        if not (path == stdlib or path.startswith(stdlib + os.sep)) or not os.path.isdir(path):
            raise ImportError("not the standard library", path=path)
        return _bx.FileFinder(path, (_bx.ExtensionFileLoader, _imp.extension_suffixes()),
                              (LeanLoader, _bx.SOURCE_SUFFIXES),
                              (_bx.SourcelessFileLoader, _bx.BYTECODE_SUFFIXES))
    hook.lean_stdlib = True  # type: ignore[attr-defined]
    return hook


def install(prefix: "str | None" = None, stdlib: "str | None" = None) -> bool:
    """Load the stdlib's lean pycs from now on in this process (when the tree is there, and the
    process runs without -O); whether it did. Idempotent; never raises. ``prefix``, ``stdlib``:
    the venv and the stdlib directory (default: this interpreter's)."""
    global _where
    try:
        tree, stdlib = tree_dir(prefix), stdlib or stdlib_dir()
        if sys.flags.optimize or not os.path.isdir(tree):
            return False
        if _where is None:
            sys.path_hooks.insert(0, path_hook(stdlib))
        _where = (stdlib, tree)
        # finders made before the hook (site's own imports) would keep the standard loader
        for path in [p for p in sys.path_importer_cache
                     if p == stdlib or p.startswith(stdlib + os.sep)]:
            del sys.path_importer_cache[path]
        return True
    except Exception:  # a broken hook must never stop a process from starting
        return False


def stale(prefix: "str | None" = None,
          stdlib: "str | None" = None) -> "tuple[int, list[str]]":
    """How many lean pycs the tree holds, and the stdlib sources they no longer match (python3
    upgraded, or the source gone): those load the standard way, with their docstrings."""
    tree, stdlib = tree_dir(prefix), stdlib or stdlib_dir()
    total, bad = 0, []
    for dirpath, _dirs, files in os.walk(tree):
        for name in files:
            if not name.endswith(".pyc"):
                continue
            total += 1
            lean = os.path.join(dirpath, name)
            source = stdlib + lean[len(tree):-4] + ".py"
            try:
                with open(lean, "rb") as f:
                    head = f.read(17)
                ok = header_matches(head, os.stat(source))
            except OSError:
                ok = False
            if not ok:
                bad.append(source)
    return total, sorted(bad)
