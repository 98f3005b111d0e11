"""Profile ranking by register contents (pure): identity registers weigh most, zeros are weak
evidence, an implausible value or a refused request rules a profile out."""

from __future__ import annotations

import asyncio

from edge_agent.cli.scan_fit import FIT, Fit, judge, ordered, rank
from edge_agent.errors import ModbusException
from edge_agent.profiles.model import (
    DataType,
    ModbusPoint,
    Profile,
    Protocol,
    Table,
)


def p(name: str, address: int, dtype: DataType, **kw: object) -> ModbusPoint:
    return ModbusPoint(name, Table.INPUT, address, dtype, **kw)  # type: ignore[arg-type]


SERIAL = p("serial", 0, DataType.STRING, length=2)
LEVEL = p("level", 2, DataType.UINT16, valid_range=(0.0, 100.0))
MODE = p("mode", 3, DataType.ENUM, enum=((0, "auto"), (1, "manual")))
PROFILE = Profile("x", "v", "m", "generic", Protocol.MODBUS, (SERIAL, LEVEL, MODE))


def score(regs: list[int]) -> Fit:
    async def read(table: Table, address: int, count: int) -> list[int]:
        return regs[address:address + count]

    return asyncio.run(rank("x", PROFILE, read))


def test_identity_and_plausible_values_fit() -> None:
    fit = score([0x5741, 0x3132, 42, 1])  # "WA12", 42, manual
    assert fit.fits and fit.score == 1.0 and fit.identity == {"serial": "WA12"}


def test_zeros_are_weak_evidence() -> None:
    fit = score([0, 0, 0, 0])
    assert not fit.fits and fit.score < FIT
    assert "serial=''" in fit.implausible


def test_an_implausible_value_rules_out() -> None:
    fit = score([0x5741, 0x3132, 4000, 7])
    assert not fit.fits and set(fit.implausible) == {"level=4000", "mode=7"}


def test_a_refused_request_rules_out() -> None:
    async def read(table: Table, address: int, count: int) -> list[int]:
        raise ModbusException(2)

    fit = asyncio.run(rank("x", PROFILE, read))
    assert fit.refused.startswith("refuses input 0..3") and not fit.fits
    good = score([0x5741, 0x3132, 42, 1])
    assert [f.profile for f in ordered([fit, good])] == ["x", "x"]
    assert ordered([fit, good])[0] is good


def test_judge_counts_nothing_for_unbounded_numbers() -> None:
    fit = Fit("x")
    assert judge(p("raw", 0, DataType.UINT16), [5], fit) == (0.0, 0.0)
