"""``Reading`` is immutable for the type checker and cheap to build at run time (readings.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.readings import Quality, Reading

ROOT = Path(__file__).resolve().parents[2]


def test_equal_readings_are_equal_and_hash_equal() -> None:
    a = Reading("pole-1", "voltage", 231.5, "V", 10, 20, Quality.GOOD, "", False, True)
    b = Reading("pole-1", "voltage", 231.5, "V", 10, 20)
    c = Reading("pole-1", "voltage", 231.6, "V", 10, 20)
    assert a == b and hash(a) == hash(b) and a != c
    assert len({a, b, c}) == 2
    assert not hasattr(a, "__dict__")  # slots: ~140 bytes a reading in the batcher's backlog


@pytest.mark.timeout(120)
def test_the_type_checker_refuses_an_assignment_to_a_reading(tmp_path: Path) -> None:
    snippet = tmp_path / "mutate.py"
    snippet.write_text(
        "from edge_agent.readings import Reading\n"
        "r = Reading('d', 'p', 1, 'V', 0, 0)\n"
        "r.value = 2\n"
        "ok = r.value\n"
    )
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--follow-imports=silent",
         str(snippet)],
        capture_output=True, text=True, cwd=ROOT, timeout=110, check=False,
    )  # fmt: skip
    assert out.returncode == 1, out.stdout + out.stderr
    assert "mutate.py:3: error" in out.stdout and "read-only" in out.stdout, out.stdout
    assert "mutate.py:4" not in out.stdout, out.stdout  # reading a field is fine


def test_building_a_reading_takes_no_per_field_setattr_call() -> None:
    """A frozen dataclass's __init__ goes through object.__setattr__ per field (its own
    __setattr__ refuses): the run-time class must not be one (issue #15, benchmarks.md)."""
    assert Reading.__setattr__ is object.__setattr__
    assert "__setattr__" not in Reading.__init__.__code__.co_names
