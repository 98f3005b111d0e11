"""Clock state: the adjtimex verdict and the boot id."""

from __future__ import annotations

import re
import time
from pathlib import Path

from edge_agent.platform.clock import (
    STA_UNSYNC,
    TIME_ERROR,
    ClockProbe,
    kernel_clock_synced,
    read_boot_id,
    synced_from,
)


def test_verdict_from_return_value_and_status() -> None:
    assert synced_from(0, 0)  # TIME_OK
    assert synced_from(1, 0x2001)  # TIME_INS with STA_PLL | STA_NANO
    assert not synced_from(TIME_ERROR, 0)
    assert not synced_from(0, STA_UNSYNC)
    assert not synced_from(-1, 0)


def test_kernel_call_answers_a_bool() -> None:
    assert isinstance(kernel_clock_synced(), bool)


def test_boot_id_is_the_kernels(tmp_path: Path) -> None:
    bid = read_boot_id()
    assert re.fullmatch(r"[0-9a-f-]{36}", bid)
    assert bid == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert read_boot_id(tmp_path / "missing") == "unknown"


def test_probe_caches_and_refreshes() -> None:
    answers = [False, True]
    calls = 0

    def synced() -> bool:
        nonlocal calls
        calls += 1
        return answers[min(calls - 1, 1)]

    probe = ClockProbe(refresh_s=0.05, synced=synced, boot_id="b")
    assert probe.state().synced is False
    assert probe.state().synced is False and calls == 1
    time.sleep(0.06)
    s = probe.state()
    assert s.synced is True and s.boot_id == "b" and calls == 2
