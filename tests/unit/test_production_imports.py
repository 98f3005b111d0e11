"""What ships imports nothing of the lab, and the benchmarks import nothing from the tests.

The gateway's distribution (edge_agent, device_profiles, firmware_bridge without the node sources)
must not import the lab (simulators, pymodbus, amqtt) nor tests/benchmarks: none of them is
installed there (tests/e2e/test_installed.py proves it on a real install). The one exception is
`edge-agent demo`, which imports the lab's demo when present and otherwise says how to get it.
Benchmarks share helpers with the tests through the lab package, never by importing tests."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAB = ("simulators", "pymodbus", "amqtt", "tests", "benchmarks")
ALLOWED = {("edge_agent/cli/cmd_demo.py", "simulators.demo.run")}


def imported(path: Path) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module))
    return out


def offenders(files: list[Path], banned: tuple[str, ...]) -> list[str]:
    found = []
    for path in files:
        rel = str(path.relative_to(ROOT))
        for line, name in imported(path):
            if name.split(".")[0] in banned and (rel, name) not in ALLOWED:
                found.append(f"{rel}:{line}: imports {name}")
    return found


def product_files() -> list[Path]:
    files = [*ROOT.joinpath("edge_agent").rglob("*.py"), *ROOT.joinpath("device_profiles").glob(
        "*.py")]
    files += [p for p in ROOT.joinpath("firmware_bridge").rglob("*.py") if "node" not in p.parts]
    return sorted(files)


def test_the_product_imports_no_lab_code() -> None:
    files = product_files()
    assert len(files) > 50
    assert offenders(files, LAB) == []


def test_the_checker_sees_an_import_of_the_lab(tmp_path: Path) -> None:
    bad = ROOT / "edge_agent" / "cli" / "cmd_demo.py"
    assert ("edge_agent/cli/cmd_demo.py", "simulators.demo.run") in {
        (str(bad.relative_to(ROOT)), n) for _, n in imported(bad)}
    assert offenders([ROOT / "simulators" / "demo" / "run.py"], ("edge_agent",)) != []


def test_benchmarks_import_nothing_from_the_tests() -> None:
    files = sorted(ROOT.joinpath("benchmarks").glob("*.py"))
    assert len(files) > 5
    assert offenders(files, ("tests",)) == []
