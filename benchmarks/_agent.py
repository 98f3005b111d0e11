"""Which edge-agent a benchmark runs: the dev venv's, or the tree ``scripts/install`` lays down.

* ``dev``: the interpreter running the benchmark and its ``edge-agent`` (this project's ``.venv``:
  an editable install, so its ``site`` imports setuptools' editable finders; on this machine
  pyenv's Python 3.11.7 with a shared libpython).
* ``installed``: what ships. ``scripts/install --root R`` (``PYTHON=/usr/bin/python3``: Debian's
  interpreter, as on the gateway) lays down a non-editable venv holding the production set, with
  compiled modules, made for /opt/edge-agent. Its ``bin/python`` runs from R as it is (it finds
  ``pyvenv.cfg`` next to itself, and the compiled modules stay valid: they are checked by source
  time and size, not path), so the agent runs as the unit starts it, ``python bin/edge-agent run``,
  with no PYTHONPATH and no virtualenv of the benchmark in its environment. The simulators, the
  broker and the consumer stay in the dev venv.

The installed tree is built from the checkout whose ``edge_agent`` the dev agent would import
(this venv's editable install, or the first PYTHONPATH entry holding one, e.g. a ``git archive``
of main for a before/after pair) and kept in ``CACHE/<key>`` for the next run: the key hashes
every file ``scripts/install`` copies from that checkout into the venv and the interpreter, so
any change to the installed source lays down a new tree (~15 s). ``EDGE_AGENT_BENCH_CACHE``
moves the cache. The installed agent's environment is the benchmark's without the variables that
change what it imports (DROP_ENV), plus what the installed unit's Environment= sets, as on the box.

``Agent.verify(pid)`` checks a running agent from the kernel's side: /proc/PID/exe is the
expected interpreter and every extension module mapped from a site-packages comes from the
expected one (cbor2's always is); the benchmark refuses to report figures of the wrong process.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

KINDS = ("dev", "installed")
PYTHON = "/usr/bin/python3"
CACHE = Path(os.environ.get("EDGE_AGENT_BENCH_CACHE", "/var/tmp/edge-agent-bench-installed"))
KEEP = 4  # newest trees kept in the cache (older ones only once unused for STALE_S)
STALE_S = 3 * 3600.0
VENV = "opt/edge-agent/venv"
UNIT = "etc/systemd/system/edge-agent.service"
# what scripts/install leaves out of the copy it builds from (its tar --exclude list)
SKIP_DIRS = {".venv", "build", "dist", "__pycache__", ".mypy_cache", ".ruff_cache",
             ".pytest_cache", ".hypothesis", ".micropython-wasm"}
# top-level directories the install copies but the venv does not hold (the production set is
# edge_agent, firmware_bridge, device_profiles: pyproject's packages.find, asserted by
# tests/e2e/test_installed.py; docs/*.md are copied beside the venv as plain files)
NOT_INSTALLED = {"docs", "tests", "benchmarks", "simulators", ".ci", ".git"}
# variables that would make the installed interpreter import something else than the tree
DROP_ENV = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE", "PYTHONSAFEPATH",
            "VIRTUAL_ENV", "__PYVENV_LAUNCHER__")

# run by the agent's interpreter: where it imports edge_agent from, and how
PROBE = """
import json, os, sys, sysconfig
import edge_agent
finders = [str(getattr(f, "__module__", "")) for f in sys.meta_path]
print(json.dumps({
    "executable": sys.executable, "real": os.path.realpath(sys.executable),
    "version": sys.version.split()[0], "prefix": sys.prefix,
    "site": os.path.realpath(sysconfig.get_paths()["purelib"]),
    "edge_agent": os.path.realpath(edge_agent.__file__),
    "editable": [m for m in finders if "editable" in m.lower()],
}))
"""


def dev_bin(name: str) -> list[str]:
    """``edge-agent`` / ``edge-sim`` of the interpreter running the benchmark."""
    exe = Path(sys.executable).parent / name
    return [str(exe)] if exe.exists() else [sys.executable, "-m", {
        "edge-agent": "edge_agent.cli.main", "edge-sim": "simulators.cli"}[name]]


@dataclass(frozen=True)
class Agent:
    kind: str  # one of KINDS
    python: str  # the interpreter that runs the agent (a venv's bin/python)
    command: tuple[str, ...]  # argv prefix of ``edge-agent``
    env: dict[str, str] | None  # None: the benchmark's own
    source: Path  # the checkout whose edge_agent it runs
    root: Path | None = None  # the scratch root scripts/install laid down (installed)
    info: dict[str, object] | None = None  # PROBE's answer

    def argv(self, *args: str) -> list[str]:
        """``edge-agent ARGS``."""
        return [*self.command, *args]

    def python_argv(self, *args: str) -> list[str]:
        return [self.python, *args]

    def wrapped(self, module: str, *args: str) -> list[str]:
        """``benchmarks.MODULE ARGS`` (a wrapper such as ``_traced`` that imports edge_agent)
        under the agent's interpreter: the installed one runs the file as a script, so nothing of
        the checkout but the wrapper's own directory is on its path."""
        if self.kind == "dev":
            return [self.python, "-m", f"benchmarks.{module}", *args]
        return [self.python, str(Path(__file__).with_name(f"{module}.py")), *args]

    @property
    def cwd(self) -> str | None:
        """Where ``python -c`` children run: the installed interpreter must not find the
        checkout's edge_agent in its working directory."""
        return None if self.kind == "dev" else "/"

    def header(self) -> str:
        info = self.info or {}
        what = (f"installed tree (scripts/install --root, non-editable venv, compiled) at "
                f"{self.root}" if self.kind == "installed"
                else "dev venv" + (" (editable install)" if info.get("editable") else ""))
        return (f"agent: {self.kind}: {info.get('real')} (Python {info.get('version')}), {what}; "
                f"edge_agent from {Path(str(info.get('edge_agent'))).parent}")

    def verify(self, pid: int) -> str:
        """Check that process ``pid`` runs this agent's interpreter and site-packages (see the
        module doc); a one-line account of what was checked."""
        info = self.info or {}
        exe = os.readlink(f"/proc/{pid}/exe")
        mapped = sorted(set(_mapped_files(pid)))
        site = str(info["site"])
        ext = [p for p in mapped if "site-packages" in p or "dist-packages" in p]
        wrong = [p for p in ext if not p.startswith(site + "/")]
        if self.kind == "installed":  # nothing of the benchmark's own interpreter or venv
            mine = {os.path.realpath(p) + "/" for p in (sys.prefix, sys.base_prefix)}
            wrong += [p for p in mapped if p.startswith(tuple(mine - {"/usr/"}))]
        if exe != info["real"] or wrong or not ext:
            raise RuntimeError(
                f"the agent (pid {pid}) is not the {self.kind} one: exe {exe} (expected "
                f"{info['real']}); extension modules {ext or 'none'} (expected under {site})")
        libpython = [p for p in mapped if "/libpython" in p]
        return (f"checked pid {pid}: exe {exe}, {len(ext)} extension modules from {site}, "
                f"libpython {libpython[0] if libpython else 'linked into the executable'}")


def add_argument(ap: argparse.ArgumentParser, default: str) -> None:
    """``--agent {dev,installed}`` on a benchmark's argparse parser."""
    ap.add_argument(
        "--agent", choices=KINDS, default=default,
        help=f"which edge-agent to run (default {default}): 'installed' lays down (or reuses) "
             "the tree of scripts/install with /usr/bin/python3, as it ships; 'dev' runs this "
             "venv's editable install")


def agent(kind: str) -> Agent:
    """The agent of ``kind`` (laying down the installed tree if the cache lacks it), probed."""
    if kind == "dev":
        found = Agent("dev", sys.executable, tuple(dev_bin("edge-agent")), None, _source())
    elif kind == "installed":
        found = installed()
    else:
        raise ValueError(f"agent kind {kind!r}: one of {KINDS}")
    return probed(found)


def probed(a: Agent) -> Agent:
    res = subprocess.run(a.python_argv("-c", PROBE), capture_output=True, text=True, timeout=60,
                         check=False, env=a.env, cwd=a.cwd or "/")
    if res.returncode != 0:
        raise RuntimeError(f"{a.python} cannot import edge_agent: {res.stderr[-2000:]}")
    info = json.loads(res.stdout.strip().splitlines()[-1])
    if a.kind == "installed":
        site = str(info["site"])
        if not (str(info["edge_agent"]).startswith(site + "/") and site.startswith(
                str(a.root) + "/")) or info["editable"]:
            raise RuntimeError(f"the installed interpreter imports edge_agent from "
                               f"{info['edge_agent']} (editable: {info['editable']}), not from "
                               f"the tree at {a.root}")
    return Agent(a.kind, a.python, a.command, a.env, a.source, a.root, info)


def installed(source: Path | None = None, python: str = PYTHON,
              cache: Path | None = None) -> Agent:
    """The installed agent of ``source`` (default: the checkout the dev agent imports) built
    with ``python``, from ``cache`` (laid down there first if missing). Not yet probed."""
    src = source or _source()
    cache = (cache or CACHE).resolve()
    if not (src / "scripts" / "install").is_file():
        raise RuntimeError(f"{src} holds edge_agent but no scripts/install: cannot lay down the "
                           "installed tree from it")
    key = tree_key(src, python)
    cache.mkdir(parents=True, exist_ok=True)
    root = cache / key
    with _locked(cache / ".lock"):
        if not (root / ".complete").is_file():
            _lay_down(src, python, root)
        (root / ".complete").touch()  # last used
        _prune(cache, keep=root)
    # the benchmark's environment without what changes the imports, and the unit's Environment=
    env = {k: v for k, v in os.environ.items() if k not in DROP_ENV} | unit_environment(root)
    venv = root / VENV
    # as the unit's ExecStart runs it: the console script under the venv's interpreter (its
    # shebang names /opt/edge-agent/venv/bin/python, the tree's place on the gateway)
    return Agent("installed", str(venv / "bin" / "python"),
                 (str(venv / "bin" / "python"), str(venv / "bin" / "edge-agent")), env, src, root)


def unit_environment(root: Path) -> dict[str, str]:
    """What the installed unit's Environment= sets (the daemon runs with it on the box)."""
    from edge_agent.platform import unit_file

    path = root / UNIT
    return unit_file.environment(unit_file.parse_unit(path.read_text(), str(path)).get(
        "Service", []), str(path))


def tree_key(src: Path, python: str) -> str:
    """A hash of what ``scripts/install`` builds the venv from: every file it copies from
    ``src`` (name and bytes) but those of NOT_INSTALLED, and the interpreter (its real path,
    size and time). Editing the docs, tests or benchmarks reuses the tree."""
    h = hashlib.sha256()
    real = os.path.realpath(python)
    st = os.stat(real)
    h.update(f"{real}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    for path in _copied_files(src):
        h.update(str(path.relative_to(src)).encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest() if not path.is_symlink()
                 else os.readlink(path).encode())
    return h.hexdigest()[:16]


def _copied_files(src: Path) -> Iterator[Path]:
    for dirpath, dirs, files in os.walk(src):
        top = Path(dirpath) == src
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info")
                         and not (top and d in NOT_INSTALLED))
        for name in sorted(files):
            if name in SKIP_DIRS or name.endswith((".pyc", ".pyo", ".egg-info")):
                continue
            yield Path(dirpath) / name


def _source() -> Path:
    """The checkout whose edge_agent the dev agent imports (PYTHONPATH first, as its console
    script sees it: not the working directory)."""
    res = subprocess.run([sys.executable, "-c", "import edge_agent; print(edge_agent.__file__)"],
                         capture_output=True, text=True, timeout=60, check=True, cwd="/")
    return Path(res.stdout.strip()).resolve().parents[1]


def _lay_down(src: Path, python: str, root: Path) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    env = {k: v for k, v in os.environ.items() if k not in DROP_ENV} | {"PYTHON": python}
    t0 = time.monotonic()
    print(f"... laying down the installed tree: PYTHON={python} {src}/scripts/install --root "
          f"{root}", file=sys.stderr, flush=True)
    try:
        res = subprocess.run([str(src / "scripts" / "install"), "--root", str(tmp)], cwd=src,
                             env=env, capture_output=True, text=True, timeout=900, check=False,
                             stdin=subprocess.DEVNULL)
        if res.returncode != 0:
            raise RuntimeError(f"scripts/install --root failed ({res.returncode}): "
                               f"{res.stdout[-1500:]}{res.stderr[-3000:]}")
        if root.exists():  # an incomplete tree of an interrupted run
            shutil.rmtree(root)
        tmp.rename(root)  # the tree names its final place, never the scratch root: it moves
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"... laid down in {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)


def _prune(cache: Path, keep: Path) -> None:
    trees = sorted((p for p in cache.iterdir() if (p / ".complete").is_file() and p != keep),
                   key=lambda p: (p / ".complete").stat().st_mtime, reverse=True)
    now = time.time()
    for old in trees[KEEP - 1:]:
        if now - (old / ".complete").stat().st_mtime > STALE_S:
            shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One process at a time lays down or prunes trees (others wait)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _mapped_files(pid: int) -> Iterator[str]:
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            parts = line.split(maxsplit=5)
            if len(parts) == 6 and parts[5].startswith("/"):
                yield parts[5].strip()
