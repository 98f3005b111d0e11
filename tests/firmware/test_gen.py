"""firmware_bridge.gen and `edge-agent firmware`: the checked-in map is what its profile
generates, generation is deterministic, edits are caught, profiles that cannot run are refused."""

from __future__ import annotations

import ast
import hashlib
import shutil
from pathlib import Path

import pytest

from edge_agent.cli.main import main as cli
from edge_agent.errors import ConfigError
from edge_agent.profiles.load import load_profile
from edge_agent.profiles.model import DataType, ModbusPoint, Profile, Protocol, Table
from firmware_bridge import gen
from tests.firmware.conftest import NODE_DIR, PROFILES

WATER = PROFILES / "water_meter.toml"
CHECKED_IN = NODE_DIR / "device_map.py"
MODBUS_FILES = [p for p in sorted(PROFILES.glob("*.toml"))
                if load_profile(p).protocol is Protocol.MODBUS]


def test_checked_in_map_is_what_the_profile_generates() -> None:
    assert CHECKED_IN.read_text(encoding="utf-8") == gen.generate(WATER)
    gen.check(WATER, CHECKED_IN)


@pytest.mark.parametrize("path", MODBUS_FILES, ids=[p.stem for p in MODBUS_FILES])
def test_generated_map_describes_every_point(path: Path, tmp_path: Path) -> None:
    out = tmp_path / "device_map.py"
    text = gen.write(path, out)
    assert gen.generate(path) == text == out.read_text(encoding="utf-8")  # deterministic
    profile = load_profile(path)
    ns: dict[str, object] = {}
    exec(compile(ast.parse(text), str(out), "exec"), ns)  # plain literals, no imports
    assert ns["PROFILE"] == profile.name
    assert ns["STRICT"] == (profile.max_gap == 0)
    points = ns["POINTS"]
    assert isinstance(points, tuple)
    assert points == tuple(gen.descriptor(p) for p in profile.modbus_points)
    assert [d[0] for d in points] == [p.name for p in profile.modbus_points]
    spans = ns["TABLES"]
    assert isinstance(spans, tuple)
    for p in profile.modbus_points:
        lo, n = spans[gen.TABLE_CODES[p.table]]
        assert lo <= p.address and p.end <= lo + n


def test_tampering_is_detected(tmp_path: Path) -> None:
    out = tmp_path / "device_map.py"
    text = gen.write(WATER, out)
    # 1. an edited value: the digest line no longer matches
    out.write_text(text.replace("0.001", "0.01", 1), encoding="utf-8")
    with pytest.raises(ConfigError, match="edited after it was generated") as exc:
        gen.check(WATER, out)
    assert exc.value.problems[0].file == str(out)
    # 2. an edit with a recomputed digest: regenerating from the profile tells
    body = text.replace("('battery', 3, 4, 1, 2", "('battery', 3, 5, 1, 2")
    body = body[: body.index(gen.DIGEST_PREFIX)]
    out.write_text(body + gen.DIGEST_PREFIX + hashlib.sha256(body.encode()).hexdigest() + "\n",
                   encoding="utf-8")
    with pytest.raises(ConfigError) as exc2:
        gen.check(WATER, out)
    problem = exc2.value.problems[0]
    line = text.splitlines().index(next(x for x in text.splitlines() if "'battery'" in x)) + 1
    assert problem.path == f"line {line}" and "battery" in problem.message
    # 3. a profile changed since: same
    prof = tmp_path / "water_meter.toml"
    shutil.copyfile(WATER, prof)
    out.write_text(text, encoding="utf-8")
    gen.check(prof, out)
    prof.write_text(WATER.read_text(encoding="utf-8").replace("address = 4 ", "address = 5 "),
                    encoding="utf-8")
    with pytest.raises(ConfigError, match=r"PROFILE_SHA256|battery"):
        gen.check(prof, out)
    # 4. not a generated file at all
    out.write_text("POINTS = ()\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="no digest line"):
        gen.check(WATER, out)


def test_at_profile_and_oversized_tables_are_refused() -> None:
    with pytest.raises(ConfigError, match="only Modbus profiles") as exc:
        gen.generate(PROFILES / "nbiot_bc95.toml")
    assert exc.value.problems[0].path == "protocol"
    far = (ModbusPoint("a", Table.HOLDING, 0, DataType.UINT16),
           ModbusPoint("b", Table.HOLDING, 9000, DataType.UINT16))
    big = Profile("big", "v", "m", "generic", Protocol.MODBUS, far, source="big.toml")
    with pytest.raises(ConfigError, match=r"big.toml: points: the holding table spans 9001"):
        gen.render(big, b"")


def test_cli_gen_check_and_bundle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "device_map.py"
    assert cli(["firmware", "gen", str(WATER), str(out)]) == 0
    assert out.read_text(encoding="utf-8") == CHECKED_IN.read_text(encoding="utf-8")
    assert cli(["firmware", "check", str(WATER), str(out)]) == 0
    out.write_text(out.read_text(encoding="utf-8").replace("'leak'", "'leek'"), encoding="utf-8")
    assert cli(["firmware", "check", str(WATER), str(out)]) == 1
    assert "edited after it was generated" in capsys.readouterr().err
    assert cli(["firmware", "gen", str(PROFILES / "nbiot_bc95.toml"), str(out)]) == 1
    assert "protocol" in capsys.readouterr().err
    bundle = tmp_path / "bundle"
    assert cli(["firmware", "bundle", str(PROFILES / "pipe_pressure.toml"), str(bundle)]) == 0
    names = sorted(p.name for p in bundle.iterdir())
    assert names == ["crc16.py", "device_map.py", "main.py", "modbus_slave.py", "node.py",
                     "regmap.py"]
    assert "'pipe_pressure'" in (bundle / "device_map.py").read_text(encoding="utf-8")
