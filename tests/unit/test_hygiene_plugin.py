"""The hygiene plugin must itself be able to fail: run a tiny suite in a subprocess."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(60)
def test_leaks_are_reported(tmp_path: Path) -> None:
    (tmp_path / "test_leaky.py").write_text(
        textwrap.dedent(
            """
            import asyncio, socket, subprocess, threading, time

            def test_thread():
                threading.Thread(target=time.sleep, args=(6,), daemon=True).start()

            def test_process():
                subprocess.Popen(["sleep", "6"])

            def test_port():
                s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
                test_port.keep = s

            def test_loop():
                loop = asyncio.new_event_loop()
                task = loop.create_task(asyncio.sleep(6))
                loop.run_until_complete(asyncio.sleep(0))  # the task has started and now waits
                assert not task.done()
                test_loop.keep = (loop, task)

            def test_clean():
                assert True
            """
        )
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.hygiene", "-p", "no:cacheprovider",
         "-o", "addopts=", "-W", "ignore", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    out = proc.stdout
    assert "threads left running" in out
    assert "child processes left running" in out
    assert "listening sockets left open" in out
    # the ERRORS section: a header per errored test, then its message
    lines = out.splitlines()
    reports = {ln.split("ERROR at teardown of ")[1].strip(" _"): lines[i + 1]
               for i, ln in enumerate(lines) if "ERROR at teardown of " in ln}
    assert set(reports) == {"test_thread", "test_process", "test_port", "test_loop"}, out
    loops = [name for name, msg in reports.items() if "unclosed event loop" in msg]
    assert loops == ["test_loop"], out  # only the test that left one, and only once
    assert "closed=False" in reports["test_loop"], out
    assert "with 1 pending task(s)" in reports["test_loop"], out
    assert "4 errors" in out, out
