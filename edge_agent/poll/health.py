"""Per-device health: adaptive timeout (RFC 6298 style) and quarantine with backed-off probes.

Timeout. Response times on one device differ mostly by how many bytes travel, so the estimator
learns the *excess* over the bus's own lower bound (frame times + turnaround, from
``bus.min_timeout_s``): ``timeout = min + srtt + max(G, 4 * rttvar)``, capped at the bus's
``timeout_max_s``. After a timeout the estimate backs off (doubles, RFC 6298 5.5) until the next
answer, so a device that merely got slower is relearnt instead of being declared dead.

Quarantine. After ``QUARANTINE_AFTER`` consecutive failures the device is not polled; it is probed
with one cheap read on the schedule of the one retry policy (``PROBE_POLICY`` walked by a
``Backoff``): often just after it died -- a unit that blinked (power glitch, reboot, a loose
connector) is back within seconds -- and ever more rarely while it stays dead. Its bus share is
adaptive but never more than ``PROBE_SHARE``: each probe is preceded by a gap of at least its
expected cost / ``PROBE_SHARE`` -- its timeout plus what the bus owner added to the last
failure beyond the timeout (``extra_s``: a guard silence before re-addressing the unit, a hold of
the line) -- and followed by one of at least its real cost / ``PROBE_SHARE``.

The probe's timeout adapts the same way. Early on it is what the unit needed when it was alive
(the estimator's timeout *without* the doubling after timeouts): a revived unit
answers as it used to, so frequent probes stay cheap. As the policy's delays grow, the probe may
wait longer (``PROBE_SHARE`` x the delay, up to the bus maximum), so a unit that came back slower
is found too. The quarantine entry (the failures before it) is not a probe and is not charged.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass

from edge_agent.retry import Backoff, RetryPolicy

log = logging.getLogger(__name__)

ALPHA = 1 / 8
BETA = 1 / 4
K = 4.0
GRANULARITY_S = 0.2  # "G": floor of the variance term (timer, scheduler, GIL and host load)
# on a network (Modbus TCP) a timeout costs one in-flight slot, not the line: be more patient with
# jitter from switches, cellular backhaul and the endpoint's own scheduling
NETWORK_GRANULARITY_S = 0.5
QUARANTINE_AFTER = 3
PROBE_POLICY = RetryPolicy(initial_s=1.0, factor=1.5, max_s=60.0, jitter=0.2)
PROBE_SHARE = 0.05  # a quarantined device may take at most this share of its bus's time


def probe_backoff(rng: random.Random | None) -> Backoff:
    """A fresh walk of PROBE_POLICY, jittered by ``rng`` (None: the shared generator)."""
    return Backoff(PROBE_POLICY) if rng is None else Backoff(PROBE_POLICY, rng)


@dataclass(slots=True)
class RttEstimator:
    """Smoothed excess response time and its deviation, in seconds."""

    max_s: float
    granularity_s: float = GRANULARITY_S
    srtt: float | None = None
    rttvar: float = 0.0
    backoff: int = 0  # doublings after timeouts, reset by the next answer

    def sample(self, excess_s: float) -> None:
        r = max(0.0, excess_s)
        if self.srtt is None:
            self.srtt = r
            self.rttvar = r / 2
        else:
            self.rttvar = (1 - BETA) * self.rttvar + BETA * abs(self.srtt - r)
            self.srtt = (1 - ALPHA) * self.srtt + ALPHA * r
        self.backoff = 0

    def on_timeout(self) -> None:
        self.backoff = min(self.backoff + 1, 16)

    def timeout(self, min_s: float, *, backed_off: bool = True) -> float:
        """Timeout to use for a request whose bus-imposed minimum is ``min_s``; without the
        doubling after timeouts when not ``backed_off`` (what an answer used to need)."""
        if self.srtt is None:
            return max(min_s, self.max_s)
        t = min_s + self.srtt + max(self.granularity_s, K * self.rttvar)
        if backed_off:
            t *= 2.0**self.backoff
        return min(self.max_s, max(min_s, t))


@dataclass(slots=True)
class DeviceHealth:
    """Failure bookkeeping for one device. Times are ``time.monotonic()`` seconds."""

    device: str
    rtt: RttEstimator
    rng: random.Random | None = None  # the probes' jitter (None: the shared generator's)
    consecutive: int = 0
    failures: int = 0
    successes: int = 0
    probes: int = 0
    quarantined: bool = False
    next_probe_at: float = 0.0
    last_good_mono: float | None = None
    last_good_ns: int | None = None
    last_error: str = ""
    probe_time_s: float = 0.0  # bus time spent on probes (and their timeouts)
    failed_time_s: float = 0.0  # bus time spent on failed transactions (probes included)
    probe_timeout_s: float = 0.0  # the next probe's timeout (0: the estimator's)
    quarantined_mono: float | None = None  # when the current quarantine began
    # walks PROBE_POLICY; made at the first quarantine (a thousand healthy devices hold none)
    _backoff: Backoff | None = None

    @classmethod
    def create(
        cls, device: str, timeout_max_s: float, rng: random.Random,
        granularity_s: float = GRANULARITY_S,
    ) -> DeviceHealth:
        return cls(device, RttEstimator(timeout_max_s, granularity_s), rng)

    @property
    def backoff(self) -> Backoff:
        """The probes' backoff (made on first use)."""
        b = self._backoff
        if b is None:
            b = self._backoff = probe_backoff(self.rng)
        return b

    def probe_due(self, now: float) -> bool:
        return self.quarantined and now >= self.next_probe_at

    def on_success(self, now: float, wall_ns: int) -> bool:
        """Record an answer (any answer: an exception response proves the device is alive).
        Returns True when this ends a quarantine."""
        recovered = self.quarantined or self.consecutive > 0
        if recovered:
            log.info(
                "device_recovered device=%s after_failures=%d quarantined=%s",
                self.device, self.consecutive, self.quarantined,
            )
        was_quarantined = self.quarantined
        self.consecutive = 0
        self.successes += 1
        self.quarantined = False
        self.quarantined_mono = None
        self.probe_timeout_s = 0.0
        if self._backoff is not None:
            self._backoff.reset()
        self.last_good_mono = now
        self.last_good_ns = wall_ns
        return was_quarantined

    def on_failure(self, now: float, err: str, bus: str, cost_s: float = 0.0,
                   probe_s: float | None = None, extra_s: float = 0.0) -> None:
        """Record a failed transaction that took ``cost_s`` of bus time. ``probe_s``: the timeout
        a probe of this device needs when it answers as it used to (None: as much as this
        failure cost); ``extra_s``: what the bus owner added to this failure beyond its timeout
        (a guard silence, a hold of the line), expected to come with a probe too."""
        self.failures += 1
        self.consecutive += 1
        self.failed_time_s += cost_s
        self.last_error = err
        if self.consecutive == 1:
            log.warning("device_down device=%s bus=%s err=%s", self.device, bus, err)
        if self.quarantined or self.consecutive >= QUARANTINE_AFTER:
            was_probe = self.quarantined
            if not self.quarantined:
                log.debug("device_quarantined device=%s bus=%s", self.device, bus)
                self.quarantined_mono = now
            self.quarantined = True
            if probe_s is None:
                probe_s, extra_s = cost_s, 0.0
            self._schedule_probe(now, cost_s if was_probe else 0.0, probe_s, extra_s)

    def _schedule_probe(self, now: float, charged_s: float, usual_s: float,
                        extra_s: float) -> None:
        """The next probe: after the policy's delay, but at least ``charged_s`` (what the probe
        just failed really took) and its own least cost ``usual_s + extra_s`` over the share cap.
        Its timeout: ``usual_s``, or more when the policy's delay affords it at the cap (from the
        delay, not the gap: an expensive probe must not make the next one dearer still)."""
        delay = self.backoff.next_delay()
        gap = max(delay, charged_s / PROBE_SHARE, (usual_s + extra_s) / PROBE_SHARE)
        self.next_probe_at = now + gap
        patient = PROBE_SHARE * delay - extra_s  # its cost <= the cap's share of the gap
        self.probe_timeout_s = min(self.rtt.max_s, max(usual_s, patient))
