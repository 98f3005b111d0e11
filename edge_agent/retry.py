"""The one retry/backoff policy of the project. Every reconnect, probe and retry uses this.

``RetryPolicy`` is immutable configuration; ``Backoff`` is the per-thing state (a device, a broker
session) that walks it: ``next_delay()`` after a failure, ``reset()`` after a success.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from edge_agent.errors import ContractError


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    initial_s: float = 0.5
    factor: float = 2.0
    max_s: float = 60.0
    jitter: float = 0.2  # +/- fraction of the delay, "decorrelates" a fleet of gateways

    def __post_init__(self) -> None:
        if self.initial_s <= 0 or self.factor < 1 or self.max_s < self.initial_s:
            raise ContractError("RetryPolicy needs initial_s > 0, factor >= 1, max_s >= initial_s")
        if not 0 <= self.jitter < 1:
            raise ContractError("RetryPolicy jitter must be in [0, 1)")

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Delay before retry number ``attempt`` (0-based), jittered, capped at ``max_s``."""
        base = min(self.max_s, self.initial_s * (self.factor ** max(0, attempt)))
        if self.jitter:
            r = (rng or random).uniform(-self.jitter, self.jitter)
            base = base * (1.0 + r)
        return float(min(self.max_s, max(0.0, base)))


# the jitter of every Backoff not given its own generator (one Mersenne Twister is 2.5 KiB:
# a thousand devices and endpoints each with its own cost megabytes for no benefit)
_SHARED_RNG = random.Random()


def _shared_rng() -> random.Random:
    return _SHARED_RNG


@dataclass(slots=True)
class Backoff:
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    rng: random.Random = field(default_factory=_shared_rng)
    attempt: int = 0

    def next_delay(self) -> float:
        d = self.policy.delay(self.attempt, self.rng)
        self.attempt += 1
        return d

    def reset(self) -> None:
        self.attempt = 0
