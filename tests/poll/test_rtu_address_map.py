"""Learned address maps on the simulated RS-485 line (pty, real 9600-baud frame timing, the line in
its own process): units refusing different address ranges are each narrowed once, then polled in
the fewest requests their firmware accepts, and their unreadable points cost no bus time per cycle.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from edge_agent.config.model import DeviceConfig
from edge_agent.poll.engine import Poller
from edge_agent.profiles.model import Table
from edge_agent.readings import Quality, Reading
from simulators.faults import AddressRange
from simulators.line_process import LineProcess
from tests.poll.fakes import accepted_optimum, profile
from tests.poll.test_rtu_line import serial_cfg, with_poller

# unit -> what its firmware lacks (inclusive ranges); the water meter maps input 0..6, 10..15
# and coil 0 (max_gap 8: its plan is input 0..15 + coil 0)
REFUSED: dict[int, tuple[AddressRange, ...]] = {
    1: (),  # the full map
    2: ((Table.INPUT, 13, 40),),  # "answers only 0..12": no serial number
    3: ((Table.INPUT, 4, 4),),  # no battery register
    4: ((Table.INPUT, 7, 9),),  # refuses the unmapped gap: everything readable, in two reads
    5: ((Table.INPUT, 5, 5), (Table.COIL, 0, 0)),  # refuses reserved 5; no valve coil
}


def refused_set(unit: int) -> set[tuple[Table, int]]:
    return {(t, a) for t, lo, hi in REFUSED[unit] for a in range(lo, hi + 1)}


@pytest.mark.timeout(60)
def test_units_refusing_different_ranges_are_polled_in_their_optimum() -> None:
    wm = profile("water_meter")
    best = {u: accepted_optimum(list(wm.modbus_points), refused_set(u), wm.max_gap)
            for u in REFUSED}
    assert best == {1: 2, 2: 2, 3: 3, 4: 3, 5: 2}  # the independent optimum, as we see it
    devs = [DeviceConfig(f"wm{u}", "water_meter", "rs485", unit_id=u, interval_s=0.5)
            for u in REFUSED]
    out: list[Reading] = []
    got: dict[str, object] = {}

    async def body(poller: Poller) -> None:
        def runs() -> dict[int, int]:  # one job per meter (one interval): its cycles
            return {int(j.device[2:]): j.runs for j in poller.jobs}

        await asyncio.sleep(3.0)  # learning: the first cycles
        s0, r0, t0 = line.stats(), runs(), time.monotonic()
        await asyncio.sleep(4.0)
        s1, r1 = line.stats(), runs()
        got.update(
            window=time.monotonic() - t0,
            cycles={u: r1[u] - r0[u] for u in REFUSED},
            requests={u: s1.requests[u] - s0.requests[u] for u in REFUSED},
            refused={u: s1.exceptions[u] - s0.exceptions[u] for u in REFUSED},
            plans={u: len(poller.devices[f"wm{u}"].plan.requests) for u in REFUSED},
            status={u: poller.status()[f"wm{u}"] for u in REFUSED},
        )
        # the technician's read-now tries unreadable points again: unit 2 got the full map
        line.refuse(2, ())
        got["read_now"] = await poller.read_now("wm2")
        got["plan2_after"] = [(r.table, r.address, r.count)
                              for r in poller.devices["wm2"].plan.requests]

    with LineProcess("water_meter", sorted(REFUSED)) as line:
        for u, ranges in REFUSED.items():
            line.refuse(u, ranges)
        asyncio.run(with_poller(serial_cfg(line.path), devs, "water_meter", out, body))
    print(f"learned-map line: {got}")
    cycles, requests, refused = got["cycles"], got["requests"], got["refused"]
    assert isinstance(cycles, dict) and isinstance(requests, dict) and isinstance(refused, dict)
    assert got["plans"] == best
    for u in REFUSED:
        assert cycles[u] >= 6, cycles  # every 0.5 s for 4 s, on a line that is not saturated
        # what reached the unit per cycle: exactly its optimum (the window may cut one cycle)
        # plus the retries of its unreadable points, on the quarantine schedule (1-3 s apart
        # at this age), never one per cycle
        polled = requests[u] - refused[u]
        assert abs(polled - best[u] * cycles[u]) <= best[u], (u, polled, cycles[u], best[u])
        assert refused[u] <= (2 if u in (2, 3, 5) else 0), (u, refused)
    assert line.final.violations == 0
    # what the points say: unreadable exactly where the firmware lacks the register
    unreadable = {(r.device, r.point) for r in out if r.quality is Quality.UNREADABLE}
    assert unreadable == {("wm2", "serial_number"), ("wm3", "battery"), ("wm5", "valve")}
    assert all(r.reason == "exc:2" and r.value is None
               for r in out if r.quality is Quality.UNREADABLE)
    assert all(r.quality in (Quality.GOOD, Quality.UNREADABLE) for r in out), \
        {(r.device, r.point, r.quality, r.reason) for r in out} - {
            (r.device, r.point, Quality.GOOD, "") for r in out}
    st = got["status"]
    assert isinstance(st, dict)
    assert {u: (s["unreadable"], s["failures"]) for u, s in st.items()} == {
        1: (0, 0), 2: (1, 0), 3: (1, 0), 4: (0, 0), 5: (1, 0)}
    # unit 2, asked again after its firmware gained the serial number: learnt from scratch
    read_now = got["read_now"]
    assert isinstance(read_now, dict) and isinstance(read_now["serial_number"], str)
    assert got["plan2_after"] == [(Table.COIL, 0, 1), (Table.INPUT, 0, 16)]
