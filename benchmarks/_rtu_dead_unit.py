"""The dead-unit rounds of benchmarks.rtu_efficiency: unit 10 dies and comes back.

After an all-alive phase, ``rounds`` times: the unit dies (entry: until quarantined), stays dead
(steady: at least ``seconds`` and two failed probes), comes back at a random moment of the probe
gap it is in (revival: until its first answer); then ``blinks`` times it comes back before the
first probe after its quarantine. Each phase is a ``Phase``: length, probes, the dead unit's share
of the line, the live units' cadence against the all-alive phase, the efficiency.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from benchmarks._rtu_measure import (
    BAUD,
    DYING,
    TURNAROUND_S,
    UNITS,
    Run,
    count_violations,
    plan_ideal_s,
    until,
)
from edge_agent.profiles.model import Profile
from simulators.faults import DeviceFault
from simulators.line_process import LineProcess


@dataclass
class Phase:
    round: int
    phase: str
    seconds: float
    probes: int
    cycles_per_s: float  # per live unit
    dead_share: float  # line time the dead unit's failed transactions took / phase length
    cadence: float  # cycles_per_s / the all-alive phase's
    efficiency: float


def dying_phases(profile: Profile, seconds: float, rounds: int, blinks: int,
                 seed: int) -> list[Phase]:
    phases: list[Phase] = []
    live = [u for u in UNITS if u != DYING]
    rng = random.Random(seed)
    with LineProcess("water_meter", UNITS, baud=BAUD, turnaround_s=TURNAROUND_S) as line:
        run = Run(profile, line)
        dev = run.poller.devices[f"wm{DYING}"]
        per_cycle = len(run.plans([1])[1])
        ideal_cycle = plan_ideal_s(run.plans([1])[1])

        def phase(r: int, name: str, t0: float, t1: float, units: Sequence[int],
                  probes: int, alive_rate: float, lost_s: float = 0.0) -> Phase:
            done = run.bus.window(t0, t1, units)
            rate = len(done) / per_cycle / len(units) / (t1 - t0)
            return Phase(r, name, round(t1 - t0, 2), probes, round(rate, 3),
                         round(lost_s / (t1 - t0), 3),
                         round(rate / alive_rate, 3) if alive_rate else 1.0,
                         round(sum(d.ideal_s for d in done) / (t1 - t0), 3))

        async def body(run: Run) -> None:
            t0 = time.monotonic()
            await asyncio.sleep(seconds)
            t1 = time.monotonic()
            alive = phase(0, "all alive", t0, t1, UNITS, 0, 0.0)
            phases.append(alive)
            health = dev.health
            for r in range(1, rounds + blinks + 1):
                blink = r > rounds
                line.fault(DYING, DeviceFault.DEAD)
                t_kill, p0, lost0 = time.monotonic(), health.probes, health.failed_time_s
                await until(lambda: health.quarantined)
                t_q, f_q = health.quarantined_mono or time.monotonic(), health.failures
                lost_q = health.failed_time_s

                def steady_done(f_q: int = f_q, t_q: float = t_q) -> bool:
                    # two probes *failed* (not just started), the phase long enough
                    return health.failures - f_q >= 2 and time.monotonic() - t_q >= seconds

                if not blink:  # a blink: back before the first probe after the quarantine
                    await until(steady_done)
                # the unit comes back at a random moment of the probe gap it is in
                gap = health.next_probe_at - time.monotonic()
                await asyncio.sleep(rng.uniform(0.0, max(0.0, gap)))
                t_back = time.monotonic()
                probes, lost_back = health.probes - p0, health.failed_time_s
                pto = health.probe_timeout_s
                line.fault(DYING, DeviceFault.NONE)
                n = len(run.bus.done)

                def answered(n: int = n) -> bool:
                    return any(d.unit == DYING for d in run.bus.done[n:])

                await until(answered)
                t_found = next(d.t for d in run.bus.done[n:] if d.unit == DYING)
                print(f"round {r}: the probe gap it came back in: {gap:.2f} s, next probe's "
                      f"timeout {pto:.3f} s", file=sys.stderr)
                rate = alive.cycles_per_s
                phases.extend([
                    phase(r, "entry: dead -> quarantined", t_kill, t_q, live, 0, rate,
                          lost_q - lost0),
                    phase(r, "blink: quarantined" if blink else "steady: quarantined", t_q,
                          t_back, live, probes, rate, lost_back - lost_q),
                ])
                if not blink:
                    phases.append(phase(r, "entry + steady (dead)", t_kill, t_back, live,
                                        probes, rate, lost_back - lost0))
                phases.append(phase(r, "revival after a blink" if blink else
                                    "revival: back -> answer", t_back, t_found, live,
                                    dev.health.probes - p0 - probes, rate))
                await asyncio.sleep(2.0)  # back to normal before the next round

        asyncio.run(run(body))
        print(f"ideal ms/cycle of one meter: {1000 * ideal_cycle:.1f}", file=sys.stderr)
    count_violations(line)
    return phases
