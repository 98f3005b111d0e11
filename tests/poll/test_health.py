"""Adaptive timeout and quarantine bookkeeping (pure logic)."""

from __future__ import annotations

import logging
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.poll.health import (
    GRANULARITY_S,
    PROBE_POLICY,
    QUARANTINE_AFTER,
    DeviceHealth,
    RttEstimator,
)


def test_no_samples_uses_the_bus_maximum() -> None:
    assert RttEstimator(max_s=1.5).timeout(0.02) == 1.5


def test_steady_samples_converge_to_mean_plus_floor() -> None:
    est = RttEstimator(max_s=2.0)
    for _ in range(200):
        est.sample(0.050)
    assert est.srtt == pytest.approx(0.050)
    assert est.rttvar < 1e-6
    assert est.timeout(0.1) == pytest.approx(0.1 + 0.050 + GRANULARITY_S)


def test_jittery_samples_widen_the_timeout() -> None:
    steady, jittery = RttEstimator(2.0, 0.01), RttEstimator(2.0, 0.01)
    rng = random.Random(1)
    for _ in range(100):
        steady.sample(0.05)
        jittery.sample(0.1 + rng.uniform(-0.09, 0.09))
    assert jittery.timeout(0.0) > steady.timeout(0.0) + 0.1


def test_timeout_backs_off_and_a_sample_resets() -> None:
    est = RttEstimator(max_s=1.0)
    for _ in range(50):
        est.sample(0.05)
    base = est.timeout(0.0)
    est.on_timeout()
    assert est.timeout(0.0) == pytest.approx(2 * base)
    for _ in range(10):
        est.on_timeout()
    assert est.timeout(0.0) == 1.0
    est.sample(0.05)
    assert est.timeout(0.0) < 2 * base


@given(st.lists(st.floats(0, 10), min_size=0, max_size=40), st.floats(0, 0.5),
       st.integers(0, 20))
def test_timeout_always_within_bounds(samples: list[float], lo: float, timeouts: int) -> None:
    est = RttEstimator(max_s=1.0)
    for s in samples:
        est.sample(s)
    for _ in range(timeouts):
        est.on_timeout()
    t = est.timeout(lo)
    assert lo <= t <= max(lo, 1.0)


def test_quarantine_after_n_failures_and_backed_off_probes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = DeviceHealth.create("m1", 1.0, random.Random(3))
    caplog.set_level(logging.INFO, logger="edge_agent.poll.health")
    now = 100.0
    for i in range(QUARANTINE_AFTER - 1):
        h.on_failure(now + i, "timeout", "rs485")
        assert not h.quarantined
    h.on_failure(now + 5, "timeout", "rs485")
    assert h.quarantined and not h.probe_due(now + 5)
    first_gap = h.next_probe_at - (now + 5)
    lo = PROBE_POLICY.initial_s * (1 - PROBE_POLICY.jitter)
    assert lo <= first_gap <= PROBE_POLICY.initial_s * (1 + PROBE_POLICY.jitter)
    gaps = []
    t = h.next_probe_at
    for _ in range(10):
        assert h.probe_due(t)
        h.on_failure(t, "timeout", "rs485")
        gaps.append(h.next_probe_at - t)
        t = h.next_probe_at
    assert gaps[-1] <= PROBE_POLICY.max_s and gaps[5] > 4 * first_gap
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "device_down device=m1" in warnings[0].getMessage()
    assert h.on_success(t, 123)
    assert not h.quarantined and h.consecutive == 0 and h.last_good_ns == 123
    assert any("device_recovered device=m1" in r.getMessage() for r in caplog.records)
    assert h.failures == QUARANTINE_AFTER + 10
    h.on_failure(t + 1, "crc", "rs485")
    assert not h.quarantined  # the backoff and count start over


def test_costly_probes_are_spaced_to_the_share_cap() -> None:
    from edge_agent.poll.health import PROBE_SHARE

    h = DeviceHealth.create("m1", 1.0, random.Random(3))
    t = 0.0
    for _ in range(QUARANTINE_AFTER):
        h.on_failure(t, "timeout", "rs485", cost_s=0.5)
    assert h.quarantined
    assert h.next_probe_at - t == pytest.approx(0.5 / PROBE_SHARE)
    busy = 0.0
    t = h.next_probe_at
    start = t
    for _ in range(20):
        h.on_failure(t, "timeout", "rs485", cost_s=1.2)
        busy += 1.2
        t = h.next_probe_at
    assert busy / (t - start) <= PROBE_SHARE + 1e-9


def test_probes_are_frequent_and_cheap_first_then_rare_and_patient_never_over_the_cap() -> None:
    from edge_agent.poll.health import PROBE_SHARE

    h = DeviceHealth.create("m1", 1.0, random.Random(4))
    cheap = 0.23  # what the unit's smallest read needed when it was alive
    t = 0.0
    for _ in range(QUARANTINE_AFTER):  # the entry: expensive timeouts, not charged to probing
        h.on_failure(t, "timeout", "rs485", cost_s=1.0, probe_s=cheap)
    assert h.quarantined and h.quarantined_mono == 0.0
    probes: list[tuple[float, float, float]] = []  # (gap before it, its timeout, when)
    last = t
    for _ in range(40):
        t = h.next_probe_at
        probes.append((t - last, h.probe_timeout_s, t))
        h.on_failure(t, "timeout", "rs485", cost_s=h.probe_timeout_s, probe_s=cheap)
        last = t
    # never more than the cap: each probe's timeout fits the gap before it
    assert all(timeout <= PROBE_SHARE * gap + 1e-9 for gap, timeout, _ in probes)
    # shortly after it died: a probe every cheap / cap (4.6 s), as cheap as the unit used to be
    assert probes[0][0] == pytest.approx(cheap / PROBE_SHARE)
    early = [p for p in probes if p[2] <= 20.0]
    assert len(early) >= 4 and all(p[0] <= 4.6 + 1e-9 and p[1] == cheap for p in early)
    # later: gaps walk the policy up to its maximum, each probe allowed the bus maximum
    assert probes[-1][0] >= PROBE_POLICY.max_s * (1 - PROBE_POLICY.jitter) - 1e-9
    assert probes[-1][1] == 1.0
    # a unit back after D seconds is found by the next probe: within seconds at first
    def found_after(d: float) -> float:
        return next(when for _, _, when in probes if when >= d) - d
    assert max(found_after(d / 10) for d in range(0, 200)) <= 4.6 + 1e-9


@pytest.mark.parametrize("extra", [0.0, 0.3, 1.0])
def test_what_the_bus_adds_to_a_probe_is_paid_for_too(extra: float) -> None:
    """A guard silence before re-addressing a failed unit (``extra``) comes with every probe:
    the gaps pay for it, and it is taken out of what a patient probe may wait."""
    from edge_agent.poll.health import PROBE_SHARE

    h = DeviceHealth.create("m1", 1.0, random.Random(5))
    cheap = 0.23
    for _ in range(QUARANTINE_AFTER):
        h.on_failure(0.0, "timeout", "rs485", cost_s=1.0 + extra, probe_s=cheap, extra_s=extra)
    last, busy = 0.0, 0.0
    for _ in range(30):
        t = h.next_probe_at
        cost = h.probe_timeout_s + extra  # the probe times out after the bus's extra wait
        assert cost <= PROBE_SHARE * (t - last) + 1e-9, (t - last, h.probe_timeout_s)
        assert cheap <= h.probe_timeout_s <= 1.0
        h.on_failure(t, "timeout", "rs485", cost_s=cost, probe_s=cheap, extra_s=extra)
        busy += cost
        last = t
    assert busy / last <= PROBE_SHARE + 1e-9


def test_a_probe_that_cost_more_than_its_timeout_pushes_the_next_one_out() -> None:
    from edge_agent.poll.health import PROBE_SHARE

    h = DeviceHealth.create("m1", 1.0, random.Random(4))
    for _ in range(QUARANTINE_AFTER):
        h.on_failure(0.0, "timeout", "rs485", cost_s=0.3, probe_s=0.2)
    t = h.next_probe_at
    h.on_failure(t, "timeout", "rs485", cost_s=2.3, probe_s=0.2)  # the line was held 2 s
    assert h.next_probe_at - t == pytest.approx(2.3 / PROBE_SHARE)
    assert h.probe_timeout_s == 0.2  # ... but is not made more expensive by it
    assert h.on_success(h.next_probe_at, 1)
    assert h.quarantined_mono is None and h.probe_timeout_s == 0.0


def test_a_device_that_never_failed_holds_one_small_object() -> None:
    """Memory of a thousand devices: the health is its own estimator, has no instance dict, and
    makes what failures need at the first failure; until then those read as their defaults."""
    h = DeviceHealth.create("m1", 1.0, random.Random(3))
    assert h.rtt is h and not hasattr(h, "__dict__")
    h.sample(0.05)
    assert h.on_success(1.0, 7, 1_000_000_000) is False
    assert h._failures is None and h.last_good_mono == 1.0 and h.last_good_ns == 7
    assert (h.failures, h.probes, h.last_error, h.quarantined_mono) == (0, 0, "", None)
    h.on_failure(2.0, "timeout", "rs485", cost_s=0.5)
    assert h._failures is not None and (h.failures, h.last_error) == (1, "timeout")
    assert h.failed_time_s == 0.5
