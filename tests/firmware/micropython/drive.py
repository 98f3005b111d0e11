# mypy: ignore-errors
# (MicroPython code: gc.mem_alloc, and modules found on the board's sys.path only)
"""Runs the unchanged node (``main.build``) on a real MicroPython against a timeline of frames.

Reads the job file (``sys.argv[1]``, else ``/job/job.json``): ``drv_dir`` (where this file and
``vmachine.py`` are), ``node_dir`` (the node modules: sources or .mpy, with ``main.py`` and
``device_map``), ``unit``, ``baud``, ``char_us``, ``step_us`` (virtual cost of each tick read),
``adc`` (ADC0 value), ``frames`` ([start_us, hex] of everything on the wire but the node's
answers), ``hook_cost_us`` ({point: virtual microseconds a sample of it takes}), ``end_us``.
Runs ``node.step()`` until the virtual clock passes ``end_us`` and prints one line
``RESULT {json}``: what the node put on the wire ([start_us, hex]), its ``stats``, the values its
hooks produced (``last``) and the bytes its receive ring dropped. With ``"heap": true`` it also
measures the heap with ``gc.mem_alloc`` after ``gc.collect`` (node modules imported, node
built, after serving the line; bytes allocated per answer) and prints ``micropython.mem_info``.
"""

import gc
import json
import sys
from binascii import hexlify, unhexlify

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


def _slow(read: "Callable[[], Any]", cost_us: int, clock: "Any") -> "Callable[[], Any]":
    def sample() -> "Any":
        clock.advance(cost_us)  # e.g. an I2C sensor taking its time: the loop is away
        return read()

    return sample


def _alloc_per_answer(node: "Any", line: "Any", clock: "Any", job: "Any") -> int:
    """Bytes the slave allocates from a request's arrival to its answer on the wire (the
    virtual UART records nothing meanwhile; the sensor hooks are not run)."""
    req = unhexlify(job["probe_request"])
    n = 50
    t = clock.now + 10000
    for i in range(n):
        line.frame(t + i * 100000, req)
    line.record = False
    slave, uart = node.slave, node.slave.uart
    gc.collect()
    gc.disable()
    a0 = gc.mem_alloc()
    done = line.answers + n
    while line.answers < done:
        if not uart.any():
            clock.advance(500)
        slave.poll()
    per = (gc.mem_alloc() - a0) // n
    gc.enable()
    return per


def main() -> None:
    path = sys.argv[1] if len(getattr(sys, "argv", [])) > 1 else "/job/job.json"
    with open(path) as f:
        job = json.load(f)
    sys.path.insert(0, job["drv_dir"])
    sys.path.insert(0, job["node_dir"])
    import vmachine

    clock = vmachine.Clock(job["step_us"])
    line = vmachine.Line(clock, job["char_us"])
    for start, data in job["frames"]:
        line.frame(start, unhexlify(data))
    vmachine.install(clock, line)
    vmachine.ADC.values[26] = job["adc"]
    heap = {}  # type: dict[str, Any]
    gc.collect()
    base = gc.mem_alloc()
    import main

    gc.enable()
    gc.collect()
    heap["import_live"] = gc.mem_alloc() - base
    node = main.build(uart_id=0, unit=job["unit"], baud=job["baud"], wdt_ms=5000)
    for entry in node._sensors:
        cost = job["hook_cost_us"].get(entry[0], 0)
        if cost:
            entry[1] = _slow(entry[1], cost, clock)
    gc.collect()
    heap["built_live"] = gc.mem_alloc() - base
    end = job["end_us"]
    step = node.step
    while clock.now < end:
        step()
    if job.get("heap"):
        gc.collect()
        heap["running_live"] = gc.mem_alloc() - base
        heap["per_answer"] = _alloc_per_answer(node, line, clock, job)
        print("MEM_INFO")
        __import__("micropython").mem_info()
    out = {
        "sent": [[s, hexlify(d).decode()] for s, d in line.sent],
        "stats": node.slave.stats,
        "last": node.last,
        "dropped": node.slave.uart.dropped,
        "heap": heap,
        "implementation": [sys.implementation.name, list(sys.implementation.version)[:3]],
    }
    print("RESULT " + json.dumps(out))


main()
