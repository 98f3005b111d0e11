"""The planner benchmark: its line-time model and its table over the shipped profiles."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.planner import DEFAULT_DIR, cycle_seconds, main
from edge_agent.profiles.load import load_profiles
from edge_agent.profiles.model import DataType, ModbusPoint, Table
from edge_agent.profiles.planner import ReadRequest


def test_cycle_time_model() -> None:
    p = ModbusPoint("p", Table.HOLDING, 0, DataType.UINT16)
    one = ReadRequest(Table.HOLDING, 0, 1, (p,))
    # 8 request + 7 response bytes + 2 x 3.5 silent characters, 10 bits each at 9600 baud
    assert cycle_seconds([one]) == pytest.approx(22 * 10 / 9600)
    assert cycle_seconds([one, one], baud=19200) == pytest.approx(2 * 22 * 10 / 19200)
    assert cycle_seconds([one], baud=115200) == pytest.approx(15 * 10 / 115200 + 2 * 0.00175)


def test_table_lists_every_modbus_profile(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    out = capsys.readouterr().out
    names = [n for n, prof in load_profiles(DEFAULT_DIR).items() if prof.modbus_points]
    assert names
    rows = {line.split()[0]: line for line in out.splitlines()[3:]}
    assert set(rows) == {*names, "TOTAL"}
    for n in names:
        planned, naive = rows[n].split()[2].split("/")
        assert int(planned) <= int(naive)


def test_empty_directory_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--dir", str(tmp_path)]) == 1
    assert "no Modbus profiles" in capsys.readouterr().err
