"""Values as a person reads them: the resolution a profile implies (scale/offset), a declared
``precision``, float registers at the digits their width carries; ``precision`` is checked like
every other key."""

from __future__ import annotations

import pytest

from edge_agent.profiles.display import decimals, format_number, format_value, significant
from edge_agent.profiles.load import load_profile
from edge_agent.profiles.model import DataType, ModbusPoint, Table
from tests.config.conftest import Doc, Writer, paths, problems


def point(dtype: DataType, scale: float = 1.0, offset: float = 0.0,
          precision: int | None = None) -> ModbusPoint:
    return ModbusPoint("p", Table.INPUT, 0, dtype, scale=scale, offset=offset,
                       precision=precision)


@pytest.mark.parametrize(("dtype", "scale", "offset", "want"), [
    (DataType.INT16, 0.1, 0.0, 1), (DataType.UINT32, 0.001, 0.0, 3),
    (DataType.UINT16, 1.0, 0.0, 0), (DataType.INT16, 0.5, 0.0, 1),
    (DataType.INT16, 1.0, -40.25, 2), (DataType.UINT16, 0.01, 0.0, 2),
    (DataType.FLOAT32, 1.0, 0.0, None), (DataType.STRING, 1.0, 0.0, None),
    (DataType.BIT, 1.0, 0.0, None), (DataType.ENUM, 1.0, 0.0, None),
])
def test_decimals_the_scale_implies(dtype: DataType, scale: float, offset: float,
                                    want: int | None) -> None:
    assert decimals(point(dtype, scale, offset)) == want


def test_declared_precision_wins() -> None:
    assert decimals(point(DataType.INT16, 0.1, precision=0)) == 0
    p = point(DataType.FLOAT32, precision=2)
    assert decimals(p) == 2 and significant(p) is None
    assert significant(point(DataType.FLOAT32)) == 7
    assert significant(point(DataType.FLOAT64)) == 15


def test_the_issue_s_values() -> None:
    assert format_number(-1081 * 0.1, 1) == "-108.1"
    assert format_number(0.47290000319480896, digits=7) == "0.4729"
    assert format_number(20.200000000000003, 1) == "20.2"
    assert format_number(-0.04, 1) == "0.0"  # no "-0.0"
    assert format_number(1234567.8, digits=7) == "1234568"
    assert format_number(3.0e-7, digits=7) == "3e-07"
    assert format_value(True) == "yes" and format_value(None) == "-"
    assert format_value(229.34, 1, None, "V") == "229.3 V"
    assert format_value("WM609453929") == "WM609453929"
    assert format_value(float("nan"), 1) == "nan"


def test_precision_is_loaded_and_checked(write: Writer, modbus_profile: Doc) -> None:
    modbus_profile["points"][0]["precision"] = 2
    prof = load_profile(write("p.toml", modbus_profile))
    assert prof.points[0].precision == 2
    modbus_profile["points"][0]["precision"] = 12
    modbus_profile["points"][2]["precision"] = 1  # a bit: nothing to round
    found = problems(lambda: load_profile(write("p.toml", modbus_profile)))
    assert paths(found) == ["points[0].precision", "points[2].precision"]
    assert "only for numeric types" in found[1].message
