"""What ``benchmarks.vs_thingsboard`` prints: the table of its loads and, on demand, the top of
a cProfile run (``--cprofile``) or of a tracemalloc snapshot (``--tracemalloc``)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any


def print_prof(path: Path, top: int = 30) -> None:
    import pstats

    for _ in range(50):
        if path.exists():
            break
        time.sleep(0.1)
    st = pstats.Stats(str(path), stream=sys.stderr)
    st.sort_stats("tottime").print_stats(top)
    st.sort_stats("cumulative").print_stats(top)


def print_snapshot(path: Path) -> None:
    from benchmarks._traced import summarize

    for _ in range(600):
        if path.exists():
            break
        time.sleep(0.1)
    print(summarize(str(path)), file=sys.stderr, flush=True)


ROWS: tuple[tuple[str, str, str], ...] = (
    ("devices x 10 registers, interval s", "devices", "{} @ {interval_s:g}"),
    ("readings/s asked", "asked_per_s", "{:,.0f}"),
    ("window s", "window_s", "{:.0f}"),
    ("readings delivered /s (verified at consumer)", "delivered_per_s", "{:,.0f}"),
    ("readings polled /s (poller count)", "polled_per_s", "{:,.0f}"),
    ("agent CPU % of one core", "cpu_pct", "{:.2f}"),
    ("  event loop / other threads (batcher, uplink)", "cpu_main_pct",
     "{:.2f} / {cpu_threads_pct:.2f}"),
    ("DELIVERED SIGNED READINGS PER AGENT CPU-S", "per_cpu_s", "{:,.0f}"),
    ("wake-ups /s: event loop / other threads", "wake_main", "{:,.0f} / {wake_threads:,.0f}"),
    ("RSS MiB (median VmRSS) / peak", "rss_mib", "{:.2f} / {hwm_mib:.2f}"),
    ("  the same in MB (10^6 bytes; issue #15: <= 33)", "rss_mib",
     "{rss_mb:.2f} / {hwm_mb:.2f}"),
    ("first publish after start s", "first_publish_s", "{:.2f}"),
    ("  (idle: first start on an empty broker) s", "first_start_s", "{:.2f}"),
    ("device simulator CPU %", "sim_cpu_pct", "{:.0f}"),
    ("chain + signatures ok", "verify_ok", "{}"),
    ("ThingsBoard GW 3.8.5 (issue #15's figure) *", "thingsboard", "{}"),
)


def table(results: list[dict[str, Any]]) -> str:
    width = max(len(label) for label, _, _ in ROWS)
    col = 16
    header = f"{'load':<{width}}" + "".join(f"  {r['load']:>{col}}" for r in results)
    lines = [header, "-" * len(header)]
    for label, key, fmt in ROWS:
        cells = []
        for r in results:
            v = r[key]
            mb = {"rss_mb": r["rss_mib"] * 2**20 / 1e6, "hwm_mb": r["hwm_mib"] * 2**20 / 1e6}
            cells.append("n/a" if v is None else fmt.format(v, **r, **mb))
        lines.append(f"{label:<{width}}" + "".join(f"  {c:>{col}}" for c in cells))
    lines += [f"verify[{r['load']}]: {r['verify_detail']}" for r in results]
    lines += [f"agent[{r['load']}]: {r['checked']}" for r in results if "checked" in r]
    lines.append("* not run here (not installable without internet): issue #15's measurement on "
                 "this machine type, the same kind of simulated devices; at 5,000/s asked it "
                 "delivered 2.1k/s; with no devices at all it idles at 7.7 % of a core")
    return "\n".join(lines)
