"""Clock state: the adjtimex verdict and the boot id."""

from __future__ import annotations

import errno
import os
import re
import time
from pathlib import Path

from edge_agent.platform.clock import (
    FLAG_FRESH_S,
    MAXERROR_LIMIT_US,
    TIME_ERROR,
    ClockProbe,
    ClockSync,
    Timex,
    flag_synced,
    kernel_clock_synced,
    read_adjtimex,
    read_boot_id,
    synced_from,
)


def test_verdict_is_timedateds_maximum_error_below_16_s() -> None:
    assert synced_from(0, 0)  # TIME_OK, just disciplined
    assert synced_from(1, 5_000)  # TIME_INS
    # chrony without rtcsync leaves STA_UNSYNC set, so adjtimex says TIME_ERROR: still synced
    assert synced_from(TIME_ERROR, 200_000)
    assert synced_from(0, MAXERROR_LIMIT_US - 1)
    assert not synced_from(TIME_ERROR, MAXERROR_LIMIT_US)  # the kernel's "never synced" value
    assert not synced_from(-1, 0)


def test_flag_age_matches_the_kernels_growth_of_maxerror() -> None:
    assert FLAG_FRESH_S == 32_000  # 16 s at 500 ppm
    assert flag_synced(0) and flag_synced(60) and flag_synced(FLAG_FRESH_S - 1)
    assert not flag_synced(FLAG_FRESH_S)
    assert not flag_synced(-3600)  # from the future: the clock was stepped back since


def fake_adjtimex(ret: int, maxerror: int) -> tuple[int, Timex]:
    tx = Timex()
    tx.maxerror = maxerror
    return ret, tx


def test_adjtimex_answers_when_allowed(tmp_path: Path) -> None:
    sync = ClockSync(tmp_path / "flag", adjtimex=lambda: fake_adjtimex(TIME_ERROR, 1000))
    assert sync() is True and sync.source == "adjtimex"
    sync = ClockSync(tmp_path / "flag", adjtimex=lambda: fake_adjtimex(TIME_ERROR, 16_000_000))
    assert sync() is False and sync.source == "adjtimex"


def test_denied_adjtimex_falls_back_to_timesyncds_flag_once(tmp_path: Path) -> None:
    calls = 0

    def denied() -> int:
        nonlocal calls
        calls += 1
        return errno.EPERM

    flag = tmp_path / "synchronized"
    sync = ClockSync(flag, adjtimex=denied)
    assert sync() is False and sync.source == "none"  # no flag: nothing says synced
    flag.touch()
    assert sync() is True and sync.source == "timesyncd"
    old = time.time() - FLAG_FRESH_S - 10
    os.utime(flag, (old, old))
    assert sync() is False and sync.source == "timesyncd"
    assert calls == 1  # a denied syscall is not retried


def test_an_unexpected_adjtimex_error_means_unsynced(tmp_path: Path) -> None:
    flag = tmp_path / "synchronized"
    flag.touch()
    sync = ClockSync(flag, adjtimex=lambda: errno.EFAULT)
    assert sync() is False and sync.source == "none"


def test_the_real_adjtimex_reads_here() -> None:
    got = read_adjtimex()
    assert not isinstance(got, int), os.strerror(got)  # outside the unit it is allowed
    ret, tx = got
    assert ret >= 0 and tx.maxerror >= 0
    assert kernel_clock_synced() == synced_from(ret, tx.maxerror)


def test_kernel_call_answers_a_bool() -> None:
    assert isinstance(kernel_clock_synced(), bool)


def test_boot_id_is_the_kernels(tmp_path: Path) -> None:
    bid = read_boot_id()
    assert re.fullmatch(r"[0-9a-f-]{36}", bid)
    assert bid == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert read_boot_id(tmp_path / "missing", credentials="") == "unknown"


def test_boot_id_from_the_units_credential(tmp_path: Path) -> None:
    (tmp_path / "boot_id").write_text("0a1b2c3d-0000-4000-8000-000000000000\n")
    got = read_boot_id(tmp_path / "missing", credentials=str(tmp_path))
    assert got == "0a1b2c3d-0000-4000-8000-000000000000"
    assert read_boot_id(credentials=str(tmp_path / "none")) == read_boot_id(credentials="")


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
