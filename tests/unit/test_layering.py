"""The data flows one way: a stage may import its own stage or an earlier one, never a later one.

Stages: platform (base, -1) → profiles, config (0) → bus (1) → poll (2) → pipeline (3) → trust (4)
→ outbox (5) → uplink (6). ``platform`` (what the OS and the service sandbox constrain: clock
state, sd_notify ...) is the base layer every stage may import; it imports no stage. Outer layers
(service, cli, control, commands, rollout) wire stages together and may import anything; no stage
may import them. Shared leaf modules (readings, errors, retry and the package ``__init__``) are
importable by all and import no stage and no outer layer.

Every module under edge_agent/ is parsed with ``ast``; every import counts wherever it sits
(module level, inside a function, under ``if TYPE_CHECKING``), relative imports are resolved, and
``importlib.import_module("edge_agent....")`` / ``__import__`` with a constant name count too.
A new top-level package or module must be given a layer here before it can pass.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "edge_agent"

STAGES: dict[str, int] = {
    "platform": -1,  # base layer: importable by every stage, imports none
    "profiles": 0,
    "config": 0,
    "bus": 1,
    "poll": 2,
    "pipeline": 3,
    "trust": 4,
    "outbox": 5,
    "uplink": 6,
}
OUTER = frozenset({"service", "cli", "control", "commands", "rollout"})
SHARED = frozenset({"readings", "errors", "retry", "__init__"})


@dataclass(frozen=True)
class Layer:
    name: str  # top-level component under edge_agent ("pipeline", "readings", ...)
    kind: str  # "stage" | "outer" | "shared" | "unassigned"
    stage: int = -1

    def __str__(self) -> str:
        if self.kind == "stage":
            return f"{self.name} ({'base' if self.stage < 0 else 'stage'} {self.stage})"
        return f"{self.name} ({self.kind})"


@dataclass(frozen=True)
class Import:
    line: int
    target: str  # absolute dotted module (or module.attribute) name
    text: str  # the statement as written, for the message


def layer_of(dotted: str, package_dir: Path) -> Layer:
    parts = dotted.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    if top in STAGES:
        return Layer(top, "stage", STAGES[top])
    if top in OUTER:
        return Layer(top, "outer")
    if top in SHARED:
        return Layer(top, "shared")
    if (package_dir / top).is_dir() or (package_dir / f"{top}.py").is_file():
        return Layer(top, "unassigned")
    return Layer("__init__", "shared")  # an attribute of edge_agent/__init__ (e.g. __version__)


def _resolve_relative(module: str, is_package: bool, level: int, name: str | None) -> str:
    base = module.split(".") if is_package else module.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, name] if name else base)


def _dynamic_target(node: ast.Call) -> str | None:
    func = node.func
    called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    if called not in ("import_module", "__import__") or not node.args:
        return None
    arg = node.args[0]
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value
    return None


def imports_of(source: str, module: str, *, is_package: bool = False) -> list[Import]:
    """Every import of an ``edge_agent`` module in ``source`` (the text of ``module``)."""
    found: list[Import] = []
    for node in ast.walk(ast.parse(source)):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = (
                _resolve_relative(module, is_package, node.level, node.module)
                if node.level
                else node.module or ""
            )
            targets = [base if a.name == "*" else f"{base}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Call):
            dyn = _dynamic_target(node)
            targets = [dyn] if dyn else []
        else:
            continue
        for t in targets:
            if t == PACKAGE or t.startswith(PACKAGE + "."):
                found.append(Import(node.lineno, t, ast.unparse(node)))
    return found


def problem(importer: Layer, target: Layer) -> str | None:
    """Why ``importer`` may not import ``target``, or None when it may."""
    if importer.kind == "unassigned":
        return f"{importer} is not assigned a layer in tests/unit/test_layering.py"
    if importer.kind == "outer" or target.kind == "shared":
        return None
    if target.kind == "unassigned":
        return f"{target} is not assigned a layer in tests/unit/test_layering.py"
    if target.kind == "outer":
        return f"{importer} must not import the outer layer {target}"
    if importer.kind == "shared":
        return f"shared leaf {importer} must not import a stage: {target}"
    if target.stage > importer.stage:
        return f"{importer} must not import the later stage {target}"
    return None


def violations(
    source: str,
    module: str,
    where: str,
    *,
    is_package: bool = False,
    package_dir: Path = ROOT / PACKAGE,
) -> list[str]:
    importer = layer_of(module, package_dir)
    out: list[str] = []
    for imp in imports_of(source, module, is_package=is_package):
        why = problem(importer, layer_of(imp.target, package_dir))
        msg = f"{where}:{imp.line}: `{imp.text}`: {why}"
        if why and msg not in out:  # one line per statement and reason
            out.append(msg)
    return out


def product_modules() -> list[tuple[Path, str, bool]]:
    out = []
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        is_package = rel.name == "__init__"
        parts = rel.parts[:-1] if is_package else rel.parts
        out.append((path, ".".join(parts), is_package))
    return out


# -- the real tree ---------------------------------------------------------------------------------


def test_the_product_package_respects_the_stage_order() -> None:
    found: list[str] = []
    for path, module, is_package in product_modules():
        where = str(path.relative_to(ROOT))
        found += violations(path.read_text(), module, where, is_package=is_package)
    assert not found, "layering violations:\n" + "\n".join(found)


def test_the_scan_sees_the_real_imports() -> None:
    """Guards against a vacuous pass: the walker must find the tree and resolve what it holds."""
    modules = product_modules()
    assert len(modules) > 50
    seen: dict[str, set[str]] = {}
    for path, module, is_package in modules:
        seen[module] = {
            i.target for i in imports_of(path.read_text(), module, is_package=is_package)
        }
    assert "edge_agent.trust.batch.BatchSigner" in seen["edge_agent.outbox.writer"]
    assert "edge_agent.outbox.store.Outbox" in seen["edge_agent.uplink.mqtt"]
    assert sum(len(v) for v in seen.values()) > 200


# -- the checker itself must be able to fail -------------------------------------------------------

BAD: list[tuple[str, str, str, int, str]] = [
    # (importer module, source, expected fragment, line, offending target layer)
    (
        "edge_agent.pipeline.batcher",
        "import time\nfrom edge_agent.outbox.store import Outbox\n",
        "later stage outbox (stage 5)",
        2,
        "from edge_agent.outbox.store import Outbox",
    ),
    (
        "edge_agent.trust.batch",
        "def late():\n    import edge_agent.uplink.mqtt\n    return edge_agent.uplink.mqtt\n",
        "later stage uplink (stage 6)",
        2,
        "import edge_agent.uplink.mqtt",
    ),
    (
        "edge_agent.pipeline.batcher",
        "from ..outbox import store\n",
        "later stage outbox (stage 5)",
        1,
        "from ..outbox import store",
    ),
    (
        "edge_agent.poll.engine",
        "from edge_agent import uplink\n",
        "later stage uplink (stage 6)",
        1,
        "from edge_agent import uplink",
    ),
    (
        "edge_agent.bus.rtu",
        "import typing\nif typing.TYPE_CHECKING:\n    from edge_agent.poll import engine\n",
        "later stage poll (stage 2)",
        3,
        "from edge_agent.poll import engine",
    ),
    (
        "edge_agent.pipeline.batcher",
        "import importlib\nmod = importlib.import_module('edge_agent.uplink.mqtt')\n",
        "later stage uplink (stage 6)",
        2,
        "importlib.import_module('edge_agent.uplink.mqtt')",
    ),
    (
        "edge_agent.bus.tcp_endpoint",
        "from edge_agent.service.daemon import Agent\n",
        "outer layer service (outer)",
        1,
        "from edge_agent.service.daemon import Agent",
    ),
    (
        "edge_agent.readings",
        "from edge_agent.profiles.model import Profile\n",
        "shared leaf readings (shared) must not import a stage",
        1,
        "from edge_agent.profiles.model import Profile",
    ),
    (
        "edge_agent.platform.clock",
        "from edge_agent.profiles.model import Profile\n",
        "later stage profiles (stage 0)",
        1,
        "from edge_agent.profiles.model import Profile",
    ),
    (
        "edge_agent.readings",
        "from edge_agent.platform.clock import ClockProbe\n",
        "shared leaf readings (shared) must not import a stage: platform (base -1)",
        1,
        "from edge_agent.platform.clock import ClockProbe",
    ),
    (
        "edge_agent.poll.health",
        "from edge_agent.pipeline.batcher import Batcher\n",
        "later stage pipeline (stage 3)",
        1,
        "from edge_agent.pipeline.batcher import Batcher",
    ),
]


@pytest.mark.parametrize(("module", "source", "why", "line", "text"), BAD)
def test_a_synthetic_violation_is_reported_with_file_line_and_import(
    module: str, source: str, why: str, line: int, text: str
) -> None:
    where = module.replace(".", "/") + ".py"
    found = violations(source, module, where)
    assert len(found) == 1, found
    assert found[0].startswith(f"{where}:{line}: `{text}`: "), found[0]
    assert why in found[0], found[0]


GOOD: list[tuple[str, str, bool]] = [
    ("edge_agent.outbox.writer", "from edge_agent.trust.batch import BatchSigner\n", False),
    ("edge_agent.outbox.store", "from .records import Head\nfrom . import runs\n", False),
    ("edge_agent.outbox", "from . import store\n", True),
    ("edge_agent.uplink.topics", "import edge_agent\nfrom edge_agent import __version__\n", False),
    ("edge_agent.pipeline.batcher", "from edge_agent.config.model import BatchConfig\n", False),
    ("edge_agent.poll.engine", "from edge_agent.platform.clock import ClockProbe\n", False),
    ("edge_agent.profiles.model", "from edge_agent.platform import clock\n", False),
    ("edge_agent.platform.notify", "from edge_agent.errors import ConfigError\n", False),
    ("edge_agent.config.model", "from edge_agent.profiles.model import Profile\n", False),
    ("edge_agent.service.daemon", "from edge_agent.uplink.mqtt import MqttUplink\n", False),
    (
        "edge_agent.cli.cmd_run",
        "import importlib\nimportlib.import_module('edge_agent.demo')\n",
        False,
    ),
    ("edge_agent.retry", "import random\nfrom edge_agent.errors import OutboxError\n", False),
    ("edge_agent.bus.rtu", "import pymodbus\nfrom os import path\n", False),
]


@pytest.mark.parametrize(("module", "source", "is_package"), GOOD)
def test_allowed_imports_pass(module: str, source: str, is_package: bool) -> None:
    assert imports_of(source, module, is_package=is_package) or "edge_agent" not in source
    assert violations(source, module, "x.py", is_package=is_package) == []


def test_an_unassigned_top_level_package_is_refused(tmp_path: Path) -> None:
    pkg = tmp_path / PACKAGE
    (pkg / "newstage").mkdir(parents=True)
    (pkg / "helpers.py").write_text("")
    src = "from edge_agent.readings import Reading\n"
    found = violations(src, "edge_agent.newstage.thing", "t.py", package_dir=pkg)
    assert len(found) == 1 and "newstage (unassigned) is not assigned a layer" in found[0]
    found = violations(
        "from edge_agent import helpers\n", "edge_agent.trust.x", "t.py", package_dir=pkg
    )
    assert len(found) == 1 and "helpers (unassigned) is not assigned a layer" in found[0]
    # a name that is no module of the tree is an attribute of edge_agent/__init__: shared
    assert violations("from edge_agent import __version__\n", "edge_agent.trust.x", "t.py") == []
