"""benchmarks.memory's import and command tables run and measure something (the daemon part is
the benchmark itself: a minute with the 1,000-device district)."""

from __future__ import annotations

from benchmarks.memory import commands_table, groups_table


def test_the_import_and_command_tables_measure() -> None:
    groups = groups_table().splitlines()
    assert len(groups) == 13 and groups[1].startswith("python 3.")
    total = float(groups[-1].split()[-3])  # cumulative RSS after the daemon's modules
    assert 15.0 < total < 200.0
    commands = commands_table().splitlines()
    rows = {line.split()[0]: line.split() for line in commands[1:]}
    assert set(rows) == {"--version", "status", "check-config", "run"}
    # status imports far less than the daemon does
    assert int(rows["status"][-2]) < int(rows["run"][-2])
