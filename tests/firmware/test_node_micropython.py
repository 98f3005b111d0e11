"""The node on a real MicroPython, not CPython behind a shim.

* WebAssembly port (MicroPython 1.27, npm ``@micropython/micropython-webassembly-pyscript``,
  installed by ``scripts/test``; run by Node.js): the unchanged node modules - from source and
  from ``.mpy`` made by mpy-cross - build the water meter of ``main.py`` and serve a busy shared
  line on virtual time (``micropython/vmachine.py``): the agent's read plan of six simulated
  devices and of the node, each answer followed by the next request exactly t3.5 later, while a
  sensor hook keeps the loop away for 20 ms at a time, so frames pile up in the UART's ring and
  come out glued. Every request to the node is answered once, after t3.5 and before the next
  frame, and the agent's codec decodes the answer to what the hooks produced. The heap it needs
  is measured with ``gc.mem_alloc`` / ``micropython.mem_info`` (docs/firmware.md gives the
  figures per board class).
* Unix port, where a ``micropython`` binary is present ($MICROPYTHON or PATH; docs/firmware.md
  gives the offline build): the same shared-line run on it (skipped, with the reason, where
  there is none).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_agent.bus.crc import crc_ok
from edge_agent.bus.pdu import decode_bits_or_regs
from edge_agent.profiles import codec
from edge_agent.profiles.load import load_profile
from simulators.clock import SimClock
from simulators.devices.catalog import make_device
from simulators.devices.profile_device import ProfileDevice
from tests.firmware import mp_real
from tests.firmware.conftest import PROFILES

UNIT = 7
WATER = load_profile(PROFILES / "water_meter.toml")
OTHERS = [(1, "lamp-1", "street_lamp"), (2, "lamp-2", "street_lamp"),
          (3, "env-3", "pole_environment"), (4, "pipe-4", "pipe_pressure"),
          (5, "cover-5", "manhole_cover"), (6, "meter-6", "water_meter")]
SLOW_HOOK = {"tamper": 20000}  # sampled every 200 ms, 20 ms each time: the loop is away


@pytest.fixture(scope="module")
def wasm() -> None:
    why = mp_real.wasm_missing()
    if why is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the node on MicroPython: {why}")
        pytest.skip(why)


@pytest.fixture(scope="module")
def others() -> Iterator[list[ProfileDevice]]:
    clock = SimClock(speed=1.0)
    yield [make_device(name, unit, load_profile(PROFILES / f"{prof}.toml"), clock, seed=3)
           for unit, name, prof in OTHERS]


def _same(got: Any, want: Any) -> bool:
    if isinstance(want, float):
        return isinstance(got, float) and math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-9)
    return bool(got == want) and type(got) is type(want)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("mpy", [False, True], ids=["source", "mpy"])
def test_wasm_micropython_node_serves_a_shared_line(
    wasm: None, others: list[ProfileDevice], tmp_path: Path, mpy: bool
) -> None:
    tl = mp_real.shared_line_timeline(UNIT, WATER, others, rounds=12)
    nodes = mp_real.node_dir(tmp_path / "node", mpy=mpy)
    res, _ = mp_real.run_wasm(tl, UNIT, nodes, tmp_path, hook_cost_us=SLOW_HOOK)
    assert res["implementation"] == ["micropython", [1, 27, 0]]
    sent = [(start, bytes.fromhex(data)) for start, data in res["sent"]]
    stats = res["stats"]  # [answered, crc/noise, other units, exceptions, overruns, late]
    others_frames = len(tl.frames) - len(tl.to_node)
    assert stats == [len(tl.to_node), 0, others_frames, 0, 0, 0], stats
    assert res["dropped"] == 0 and len(sent) == len(tl.to_node) == 24
    last = res["last"]
    assert last["battery"] == 61 and last["serial_number"] == "e6614104032f", last
    for nr, (start, answer) in zip(tl.to_node, sent, strict=True):
        assert start >= nr.end_us + tl.t35_us - 1, (nr, start)  # t3.5 after the request
        assert start + len(answer) * tl.char_us <= nr.next_us, (nr, start)  # before the next
        assert crc_ok(answer) and answer[:2] == nr.frame[:2], answer.hex()
        regs = decode_bits_or_regs(answer[2:-2], nr.request.table, nr.request.count)
        for point, part in nr.request.slices(regs):
            got = codec.decode(point, part)
            if point.name in last:  # sensor points; the valve coil is the map's initial value
                assert _same(got, last[point.name]), (point.name, got, last[point.name])
            else:
                assert point.name == "valve" and got is True


@pytest.mark.timeout(300)
def test_unix_port_micropython_node_serves_a_shared_line(
    others: list[ProfileDevice], tmp_path: Path
) -> None:
    binary = mp_real.unix_micropython()
    if binary is None:
        pytest.skip("no unix-port micropython binary ($MICROPYTHON or PATH): build it as "
                    "docs/firmware.md says")
    tl = mp_real.shared_line_timeline(UNIT, WATER, others, rounds=6)
    nodes = mp_real.node_dir(tmp_path / "node", mpy=True)
    res, _ = mp_real.run_wasm(tl, UNIT, nodes, tmp_path, hook_cost_us=SLOW_HOOK, unix=binary)
    assert res["implementation"][0] == "micropython"
    others_frames = len(tl.frames) - len(tl.to_node)
    assert res["stats"] == [len(tl.to_node), 0, others_frames, 0, 0, 0], res["stats"]
    assert len(res["sent"]) == len(tl.to_node)


@pytest.mark.timeout(300)
def test_wasm_micropython_heap_use(
    wasm: None, others: list[ProfileDevice], tmp_path: Path
) -> None:
    """The heap the node takes on a 32-bit MicroPython (object sizes and 16-byte GC blocks as
    on the rp2 and esp32 ports), from source and from .mpy: ``gc.mem_alloc()`` after the node
    modules are imported and after ``main.build``, and the bytes allocated from a request's
    arrival to its answer (gc disabled). This port's ``gc.collect()`` reclaims nothing while
    Python runs, so the first two include all garbage made so far: upper bounds of what stays
    live. docs/firmware.md states these figures per board class."""
    tl = mp_real.shared_line_timeline(UNIT, WATER, others, rounds=2)
    figures: dict[str, dict[str, int]] = {}
    for mpy in (False, True):
        nodes = mp_real.node_dir(tmp_path / f"node-{mpy}", mpy=mpy)
        res, out = mp_real.run_wasm(tl, UNIT, nodes, tmp_path, heap=True)
        assert "GC: total:" in out  # micropython.mem_info() ran
        figures["mpy" if mpy else "source"] = res["heap"]
    print("node heap (bytes):", figures)
    src, mpy_ = figures["source"], figures["mpy"]
    assert mpy_["import_live"] < src["import_live"] - 8000, figures  # no bytecode compiled
    # the figures docs/firmware.md states, with room for another MicroPython version
    assert src["built_live"] < 48_000 and mpy_["built_live"] < 32_000, figures
    assert src["per_answer"] <= 160 and mpy_["per_answer"] <= 160, figures
