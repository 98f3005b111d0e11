"""Where a process's CPU goes, from py-spy's raw (collapsed) output: own samples per function and
samples per thread. py-spy samples only threads that are running (not idle), so the shares are
shares of the CPU the process used.

    python -m benchmarks._spy FILE.txt [--top 20]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*)\)$")


def py_spy() -> str | None:
    venv = Path(sys.executable).parent / "py-spy"  # installed next to this interpreter
    return str(venv) if venv.exists() else shutil.which("py-spy")


def record(pid: int, seconds: float, out: Path, rate: int = 250) -> subprocess.Popen[bytes]:
    """Start sampling ``pid`` for ``seconds`` (py-spy must be installed; the caller waits)."""
    exe = py_spy()
    if exe is None:
        raise RuntimeError("py-spy not found (pip install py-spy)")
    return subprocess.Popen(
        [exe, "record", "-p", str(pid), "-d", str(max(1, round(seconds))), "-r", str(rate),
         "-f", "raw", "--nolineno", "-t", "--nonblocking", "-o", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _short(frame: str) -> str:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    f = m["file"]
    for marker in ("site-packages/", "lib/python3.11/", "edge_agent/"):
        if marker in f:
            f = f.split(marker, 1)[1]
            break
    return f"{m['func']} ({f})"


WAITS = ("EpollSelector.select (selectors.py)", "select (<built-in>)", "Condition.wait",
         "Event.wait", "sleep (<built-in>)")


def summarize(path: Path, top: int = 20) -> str:
    """Own and inclusive samples per function, samples per thread. Samples whose leaf is a wait
    (epoll/select/condition) are counted apart: py-spy's idle detection is racy, so some of
    them are a sleeping thread caught on its way in or out."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    mine: set[str] = set()
    total = waits = 0
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        frames = stack.split(";")
        count = int(n)
        leaf = _short(frames[-1])
        if any(leaf.startswith(w) for w in WAITS):
            waits += count
            continue
        total += count
        threads[frames[0].partition(": ")[2] or frames[0]] += count
        own[leaf] += count
        for x in set(frames[1:]):
            f = _short(x)
            incl[f] += count
            if "edge_agent/" in x:
                mine.add(f)
    if not total:
        return f"{path}: no samples"
    lines = [f"{path.name}: {total} samples running, {waits} more in a wait (left out)", "",
             "by thread:"]
    lines += [f"  {100 * n / total:5.1f} %  {t}" for t, n in threads.most_common(8)]
    lines += ["", "own time by function:"]
    lines += [f"  {100 * n / total:5.1f} %  {f}" for f, n in own.most_common(top)]
    lines += ["", "inclusive, edge_agent functions:"]
    ours = [(f, n) for f, n in incl.most_common() if f in mine]
    lines += [f"  {100 * n / total:5.1f} %  {f}" for f, n in ours[:top]]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks._spy")
    ap.add_argument("file", type=Path)
    ap.add_argument("--top", type=int, default=20)
    args = ap.parse_args()
    print(summarize(args.file, args.top))


if __name__ == "__main__":
    main()
