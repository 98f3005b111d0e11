"""State of a simulated NB-IoT module (Quectel BC95 class), served by the AT modem transport.

Units as the module reports them after parsing: ``rsrp`` in dBm, ``sinr`` in dB, ``csq`` the 0..31
(99 = unknown) value of AT+CSQ, ``reg_state`` the AT+CEREG stat (0 not searching, 1 home,
2 searching, 3 denied, 5 roaming), ``coverage_class`` the ECL 0..2 derived from RSRP.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from ..faults import FaultState

NOT_REGISTERED, HOME, SEARCHING, DENIED, ROAMING = 0, 1, 2, 3, 5
STEP_S = 10.0
DROP_RATE_PER_STEP = 0.0005  # a cell drop every ~5.5 h of simulated time


def _luhn_digit(digits: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            d = d - 9 if d > 9 else d
        total += d
    return str((10 - total % 10) % 10)


@dataclass(slots=True)
class NbiotState:
    name: str = "nbiot-1"
    seed: int = 0
    imei: str = ""
    imsi: str = ""
    csq: int = 99
    rsrp: float = -90.0
    sinr: float = 10.0
    cell_id: int = 0
    coverage_class: int = 0
    reg_state: int = SEARCHING
    faults: FaultState = field(default_factory=FaultState)
    t: float = 0.0
    searching_until: float = 0.0
    mean_rsrp: float = -90.0
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(f"{self.seed}:{self.name}")
        body = "86" + "".join(str(self.rng.randrange(10)) for _ in range(12))
        self.imei = self.imei or body + _luhn_digit(body)
        self.imsi = self.imsi or "46000" + "".join(str(self.rng.randrange(10)) for _ in range(10))
        self.cell_id = self.cell_id or self.rng.randrange(0x10000, 0xFFFFFFF)
        self.mean_rsrp = self.rng.uniform(-110.0, -80.0)
        self.rsrp = self.mean_rsrp
        self.searching_until = self.t + 30.0  # attach takes ~30 s after power-on
        self._derive()

    def _derive(self) -> None:
        self.coverage_class = 0 if self.rsrp > -105.0 else 1 if self.rsrp > -115.0 else 2
        if self.reg_state in (HOME, ROAMING):
            rssi = self.rsrp + 17.0
            self.csq = max(0, min(31, round((rssi + 113.0) / 2.0)))
        else:
            self.csq = 99

    def tick(self, now_s: float) -> None:
        """Advance to simulated time ``now_s`` in fixed steps (deterministic per seed)."""
        while self.t + STEP_S <= now_s:
            self.t += STEP_S
            # mean-reverting random walk of the radio conditions
            self.rsrp += 0.1 * (self.mean_rsrp - self.rsrp) + self.rng.gauss(0.0, 1.0)
            self.sinr = round(max(-10.0, min(30.0, (self.rsrp + 120.0) * 0.6
                                              + self.rng.gauss(0.0, 1.0))), 1)
            if self.reg_state in (HOME, ROAMING) and self.rng.random() < DROP_RATE_PER_STEP:
                self.reg_state = SEARCHING
                self.searching_until = self.t + self.rng.uniform(20.0, 120.0)
            if self.reg_state == SEARCHING and self.t >= self.searching_until:
                self.reg_state = HOME
                self.cell_id = self.rng.randrange(0x10000, 0xFFFFFFF)
        self.rsrp = round(self.rsrp, 1)
        self._derive()

    def reboot(self) -> None:
        """Module reset: detached, re-attaches after ~30 s; identity (IMEI/IMSI) is kept."""
        self.reg_state = SEARCHING
        self.searching_until = self.t + 30.0
        self.faults.clear()
        self._derive()
