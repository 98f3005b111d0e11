"""LateAnswers' learning of a unit answering later than the late-answer window (pure logic; the
real line: tests/poll/test_rtu_line.py)."""

from __future__ import annotations

import pytest

from edge_agent.bus.late import LEARN_CAP, LEARN_MARGIN, LEARN_SLACK_S, LateAnswers


def test_a_lateness_beyond_the_window_is_learnt_and_held_for_within_a_cap() -> None:
    late = LateAnswers("rs485", 0.5)
    assert late.hold_for(1) == 0.5 and late.hold_for(2) == 0.5
    late.attributed(1, sent=10.0, now=10.3)  # within the window: nothing to learn
    assert late.learnt_s == {} and late.hold_for(1) == 0.5
    late.attributed(1, sent=20.0, now=20.9)  # after its hold ended: learnt
    assert late.learnt_s == {1: pytest.approx(0.9)}
    assert late.hold_for(1) == pytest.approx(0.9 * LEARN_MARGIN + LEARN_SLACK_S)
    assert late.hold_for(2) == 0.5  # the neighbour's holds are its own
    late.attributed(1, sent=30.0, now=31.0)  # inside the learnt hold: nothing new
    assert late.learnt_s == {1: pytest.approx(0.9)}
    late.attributed(1, sent=40.0, now=45.0)  # absurdly late: held for, up to the cap
    assert late.hold_for(1) == LEARN_CAP * 0.5
    assert late.count == {1: 4}


def test_no_window_no_learning_of_holds() -> None:
    late = LateAnswers("rs485", 0.0)  # holds off (scan): a late answer changes no hold
    late.attributed(1, sent=0.0, now=1.0)
    assert late.hold_for(1) == 0.0
