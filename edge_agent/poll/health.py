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
from typing import Generic, TypeVar, cast, overload

from edge_agent.retry import Backoff, RetryPolicy

log = logging.getLogger(__name__)
T = TypeVar("T")

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
    doublings: int = 0  # back-offs after timeouts, reset by the next answer

    def sample(self, excess_s: float) -> None:
        r = max(0.0, excess_s)
        if self.srtt is None:
            self.srtt = r
            self.rttvar = r / 2
        else:
            self.rttvar = (1 - BETA) * self.rttvar + BETA * abs(self.srtt - r)
            self.srtt = (1 - ALPHA) * self.srtt + ALPHA * r
        self.doublings = 0

    def on_timeout(self) -> None:
        self.doublings = min(self.doublings + 1, 16)

    def timeout(self, min_s: float, *, backed_off: bool = True) -> float:
        """Timeout to use for a request whose bus-imposed minimum is ``min_s``; without the
        doubling after timeouts when not ``backed_off`` (what an answer used to need)."""
        if self.srtt is None:
            return max(min_s, self.max_s)
        t = min_s + self.srtt + max(self.granularity_s, K * self.rttvar)
        if backed_off:
            t *= 2.0**self.doublings
        return min(self.max_s, max(min_s, t))


class _Failures:
    """What a device that ever failed keeps besides (made at its first failure)."""

    __slots__ = ("backoff", "failed_time_s", "failures", "last_error", "next_probe_at",
                 "probe_time_s", "probe_timeout_s", "probes", "quarantined_mono")

    def __init__(self) -> None:
        self.failures = 0
        self.probes = 0
        self.next_probe_at = 0.0
        self.last_error = ""
        self.probe_time_s = 0.0
        self.failed_time_s = 0.0
        self.probe_timeout_s = 0.0
        self.quarantined_mono: float | None = None
        self.backoff: Backoff | None = None


class _Failed(Generic[T]):
    """A field of a ``DeviceHealth``'s failure record (``_Failures``, same name), read and set
    as the health's attribute: its default until the device first fails; setting it makes the
    record."""

    __slots__ = ("default", "name")

    def __init__(self, default: T) -> None:
        self.default = default
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type) -> _Failed[T]: ...
    @overload
    def __get__(self, obj: DeviceHealth, owner: type) -> T: ...
    def __get__(self, obj: DeviceHealth | None, owner: type) -> T | _Failed[T]:
        if obj is None:
            return self
        f = obj._failures
        return self.default if f is None else cast(T, getattr(f, self.name))

    def __set__(self, obj: DeviceHealth, value: T) -> None:
        setattr(obj._record(), self.name, value)


class DeviceHealth(RttEstimator):
    """Failure bookkeeping for one device and its response-time estimator (``rtt``: itself).
    Times are ``time.monotonic()`` seconds.

    A thousand devices that answer hold one object each, of the fields an answer touches; what
    failures need (counters, the probes' schedule and backoff) is made at the first failure.
    """

    __slots__ = ("_failures", "consecutive", "device", "last_good_mono_ns", "last_good_ns",
                 "quarantined", "rng")

    def __init__(self, device: str, max_s: float, rng: random.Random | None = None,
                 granularity_s: float = GRANULARITY_S) -> None:
        RttEstimator.__init__(self, max_s, granularity_s)
        self.device = device
        self.rng = rng  # the probes' jitter (None: the shared generator's)
        self.consecutive = 0
        self.quarantined = False
        self.last_good_mono_ns: int | None = None
        self.last_good_ns: int | None = None
        self._failures: _Failures | None = None

    # what failures need, as attributes: the default until the device first fails; setting
    # one makes the record
    failures = _Failed(0)  # failed transactions in all
    probes = _Failed(0)  # probes sent while quarantined
    next_probe_at = _Failed(0.0)  # when the next probe is due
    last_error = _Failed("")  # the last failure's reason
    probe_time_s = _Failed(0.0)  # bus time spent on probes (and their timeouts)
    failed_time_s = _Failed(0.0)  # bus time spent on failed transactions (probes included)
    probe_timeout_s = _Failed(0.0)  # the next probe's timeout (0: the estimator's)
    quarantined_mono: _Failed[float | None] = _Failed(None)  # when the current quarantine began

    @classmethod
    def create(
        cls, device: str, timeout_max_s: float, rng: random.Random,
        granularity_s: float = GRANULARITY_S,
    ) -> DeviceHealth:
        return cls(device, timeout_max_s, rng, granularity_s)

    __eq__ = object.__eq__  # one device's record: by identity (not the estimator's fields)
    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return (f"DeviceHealth(device={self.device!r}, consecutive={self.consecutive}, "
                f"failures={self.failures}, quarantined={self.quarantined})")

    @property
    def rtt(self) -> RttEstimator:
        """The adaptive timeout's estimator (this object)."""
        return self

    @property
    def last_good_mono(self) -> float | None:
        """When the last answer arrived (monotonic seconds; None: never)."""
        ns = self.last_good_mono_ns
        return None if ns is None else ns / 1e9

    def _record(self) -> _Failures:
        f = self._failures
        if f is None:
            f = self._failures = _Failures()
        return f

    @property
    def backoff(self) -> Backoff:
        """The probes' backoff (made on first use)."""
        f = self._record()
        b = f.backoff
        if b is None:
            b = f.backoff = probe_backoff(self.rng)
        return b

    def probe_due(self, now: float) -> bool:
        return self.quarantined and now >= self.next_probe_at

    def on_success(self, now: float, wall_ns: int, mono_ns: int | None = None) -> bool:
        """Record an answer (any answer: an exception response proves the device is alive)
        that arrived at ``now`` (``mono_ns``: the same in nanoseconds, when the caller has it).
        Returns True when this ends a quarantine."""
        recovered = self.quarantined or self.consecutive > 0
        if recovered:
            log.info(
                "device_recovered device=%s after_failures=%d quarantined=%s",
                self.device, self.consecutive, self.quarantined,
            )
        was_quarantined = self.quarantined
        self.consecutive = 0
        self.quarantined = False
        f = self._failures
        if f is not None:
            f.quarantined_mono = None
            f.probe_timeout_s = 0.0
            if f.backoff is not None:
                f.backoff.reset()
        self.last_good_mono_ns = round(now * 1e9) if mono_ns is None else mono_ns
        self.last_good_ns = wall_ns
        return was_quarantined

    def on_failure(self, now: float, err: str, bus: str, cost_s: float = 0.0,
                   probe_s: float | None = None, extra_s: float = 0.0) -> None:
        """Record a failed transaction that took ``cost_s`` of bus time. ``probe_s``: the timeout
        a probe of this device needs when it answers as it used to (None: as much as this
        failure cost); ``extra_s``: what the bus owner added to this failure beyond its timeout
        (a guard silence, a hold of the line), expected to come with a probe too."""
        f = self._record()
        f.failures += 1
        self.consecutive += 1
        f.failed_time_s += cost_s
        f.last_error = err
        if self.consecutive == 1:
            log.warning("device_down device=%s bus=%s err=%s", self.device, bus, err)
        if self.quarantined or self.consecutive >= QUARANTINE_AFTER:
            was_probe = self.quarantined
            if not self.quarantined:
                log.debug("device_quarantined device=%s bus=%s", self.device, bus)
                f.quarantined_mono = now
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
        f = self._record()
        f.next_probe_at = now + gap
        patient = PROBE_SHARE * delay - extra_s  # its cost <= the cap's share of the gap
        f.probe_timeout_s = min(self.max_s, max(usual_s, patient))
