"""A simulated RTU line (RtuLine + profile devices) in a child process.

Timing-sensitive tests and the efficiency benchmark run the line in its own process: the slaves
then never wait for the agent's GIL (real slaves don't), so a loaded host delays both sides
independently instead of starving the simulator inside the agent's process.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO

from edge_agent.profiles.load import load_profile
from edge_agent.profiles.model import Table
from edge_agent.profiles.shipped import shipped_dir
from simulators.clock import SimClock
from simulators.devices.catalog import make_device
from simulators.faults import AddressRange, DeviceFault
from simulators.transports.rtu_line import RtuLine


@dataclass(frozen=True)
class LineStats:
    violations: int
    requests: dict[int, int]  # per unit id
    responses: dict[int, int]  # answers put on the wire (late ones included), per unit id
    exceptions: dict[int, int]  # exception responses, per unit id


def serve(profile: str, units: list[int], baud: int, turnaround_s: float, seed: int) -> None:
    """Child: run the line; JSON commands on stdin, one per line; answers on stdout."""
    prof = load_profile(shipped_dir() / f"{profile}.toml")
    clock = SimClock()
    sims = {u: make_device(f"{profile}{u}", u, prof, clock, seed=seed) for u in units}
    with RtuLine(list(sims.values()), baud=baud, turnaround_s=turnaround_s) as line:
        print(json.dumps({"path": line.path}), flush=True)
        for text in sys.stdin:
            msg = json.loads(text)
            if msg["cmd"] == "fault":
                faults = sims[msg["unit"]].faults
                faults.kind = DeviceFault(msg["kind"])
                faults.slow_s = float(msg.get("slow_s", faults.slow_s))
                print(json.dumps({}), flush=True)
            elif msg["cmd"] == "refuse":
                sims[msg["unit"]].faults.refused = tuple(
                    (Table(t), int(a), int(b)) for t, a, b in msg["ranges"])
                print(json.dumps({}), flush=True)
            elif msg["cmd"] == "stats":
                st = line.stats
                print(json.dumps({
                    "violations": len(line.violations),
                    "requests": {u: s.requests for u, s in st.per_unit.items()},
                    "responses": {u: s.responses for u, s in st.per_unit.items()},
                    "exceptions": {u: s.exceptions for u, s in st.per_unit.items()},
                }), flush=True)
            else:
                break


class LineProcess:
    """``with LineProcess("water_meter", range(1, 11)) as line: ... line.path ...``"""

    def __init__(self, profile: str, units: Sequence[int], *, baud: int = 9600,
                 turnaround_s: float = 0.005, seed: int = 1) -> None:
        self._argv = [sys.executable, "-m", "simulators.line_process", profile,
                      ",".join(str(u) for u in units), str(baud), str(turnaround_s), str(seed)]
        self._proc: subprocess.Popen[str] | None = None
        self.path = ""

    def _ask(self, msg: dict[str, object]) -> dict[str, object]:
        assert self._proc is not None
        stdin, stdout = self._proc.stdin, self._proc.stdout
        assert stdin is not None and stdout is not None
        stdin.write(json.dumps(msg) + "\n")
        stdin.flush()
        return self._read(stdout)

    @staticmethod
    def _read(stdout: IO[str]) -> dict[str, object]:
        line = stdout.readline()
        if not line:
            raise RuntimeError("the line process died")
        answer: dict[str, object] = json.loads(line)
        return answer

    def __enter__(self) -> LineProcess:
        self._proc = subprocess.Popen(self._argv, stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True)
        assert self._proc.stdout is not None
        self.path = str(self._read(self._proc.stdout)["path"])
        return self

    def fault(self, unit: int, kind: DeviceFault, *, slow_s: float | None = None) -> None:
        msg: dict[str, object] = {"cmd": "fault", "unit": unit, "kind": kind.value}
        if slow_s is not None:
            msg["slow_s"] = slow_s  # how late a SLOW unit answers
        self._ask(msg)

    def refuse(self, unit: int, ranges: Sequence[AddressRange]) -> None:
        """From now on ``unit`` answers exception 2 to any request touching one of ``ranges``
        ((table, first, last), inclusive); ``()``: the full map again."""
        self._ask({"cmd": "refuse", "unit": unit,
                   "ranges": [[t.value, a, b] for t, a, b in ranges]})

    def stats(self) -> LineStats:
        a = self._ask({"cmd": "stats"})
        requests, exceptions, violations = a["requests"], a["exceptions"], a["violations"]
        responses = a["responses"]
        assert isinstance(requests, dict) and isinstance(exceptions, dict)
        assert isinstance(responses, dict) and isinstance(violations, int)
        return LineStats(violations, {int(u): int(n) for u, n in requests.items()},
                         {int(u): int(n) for u, n in responses.items()},
                         {int(u): int(n) for u, n in exceptions.items()})

    def __exit__(self, *exc: object) -> None:
        proc = self._proc
        if proc is None:
            return
        try:
            self.final = self.stats()
        finally:
            self._proc = None
            if proc.stdin:
                proc.stdin.close()  # EOF ends the child's command loop
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            if proc.stdout:
                proc.stdout.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("profile")
    ap.add_argument("units")
    ap.add_argument("baud", type=int)
    ap.add_argument("turnaround_s", type=float)
    ap.add_argument("seed", type=int)
    a = ap.parse_args()
    serve(a.profile, [int(u) for u in a.units.split(",")], a.baud, a.turnaround_s, a.seed)


if __name__ == "__main__":
    main()
