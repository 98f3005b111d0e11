"""The technician reading values at the cabinet, against a running gateway (issue #13 review,
defects 3, 4 and 6): `tail` never waits in silence (a device or class whose points are reported
rarely, a device that is down: one note at once), `write` takes the words `read` shows and checks
bounds before asking, and `read --json` and `tail --json` carry the same fields, rounding and
quality words."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import time

import pytest

from .conftest import Gateway
from .test_daemon import wait

CLI = [sys.executable, "-m", "edge_agent.cli.main"]


def stderr_lines(gw: Gateway, *argv: str, n: int = 1, within: float = 10.0) -> list[str]:
    """The first ``n`` lines `edge-agent ARGV` writes on stderr, waiting at most ``within``
    seconds for each; the command is then stopped (Ctrl-C)."""
    proc = subprocess.Popen([*CLI, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=dict(os.environ, EDGE_AGENT_SOCKET=str(gw.socket_path)))
    assert proc.stderr is not None
    fd = proc.stderr.fileno()
    got = b""
    try:
        while got.count(b"\n") < n and select.select([fd], [], [], within)[0]:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            got += chunk
        return got.decode().splitlines()[:n]
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert b"Traceback" not in got + err, got + err


@pytest.mark.timeout(180)
def test_tail_says_at_once_why_it_may_stay_silent(gateway: Gateway) -> None:
    gw = gateway
    t0 = time.monotonic()
    [note] = stderr_lines(gw, "tail", "--device", "lamp-01")
    assert time.monotonic() - t0 < 10
    assert note.startswith("note: the ") and " points of lamp-01 are reported only when they " \
        "change or move beyond their deadband, at least every 5 min (heartbeat)" in note, note
    assert "`edge-agent read lamp-01` reads them now" in note, note
    [note] = stderr_lines(gw, "tail", "--class", "street_light")
    assert note.startswith("note: the points of the 2 street_light devices are reported only"), \
        note
    assert "`edge-agent read DEVICE` reads them now" in note, note
    # a device that is down: said at once, with its last error
    gw.sim.fault("meter-02", "dead")
    assert wait(lambda: any(d["name"] == "meter-02" and d.get("consecutive_failures")
                            for d in json.loads(gw.cli("devices", "--json").stdout)), 60)
    lines = stderr_lines(gw, "tail", "--device", "meter-02", n=2)
    assert any(re.match(r"note: meter-02 is (DOWN|QUARANTINED) \(last error: timeout\): its "
                        r"readings come without a value \(quality bad\) until it answers "
                        "again", ln) for ln in lines), lines


def on_a_terminal(gw: Gateway, *argv: str, timeout: float = 20) -> tuple[int, str]:
    """`edge-agent ARGV` with a real terminal (a pty) as its stdin, stdout and stderr: it may
    ask. (exit status, what it wrote); a question left unanswered times the test out."""
    master, slave = os.openpty()
    try:
        proc = subprocess.Popen([*CLI, *argv], stdin=slave, stdout=slave, stderr=slave,
                                env=dict(os.environ, EDGE_AGENT_SOCKET=str(gw.socket_path)))
        os.close(slave)
        out = b""
        deadline = time.monotonic() + timeout
        while proc.poll() is None or select.select([master], [], [], 0)[0]:
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                pytest.fail(f"no answer in {timeout} s (it waits for a reply?): {out!r}")
            if select.select([master], [], [], 0.1)[0]:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: the other side is closed
                    break
                if not chunk:
                    break
                out += chunk
        return proc.wait(), out.decode(errors="replace")
    finally:
        os.close(master)


@pytest.mark.timeout(180)
def test_write_takes_the_words_read_shows_and_checks_bounds_first(gateway: Gateway) -> None:
    gw = gateway
    assert wait(lambda: gw.cli("read", "lamp-01", "lamp_on").returncode == 0, 30)
    shown = gw.cli("read", "lamp-01", "lamp_on").stdout
    assert re.search(r"^lamp_on\s+(yes|no)\s", shown, re.M), shown
    for word, echo in (("no", "no"), ("yes", "yes"), ("NO", "no"), ("on", "yes"),
                       ("off", "no"), ("true", "yes"), ("1", "yes")):
        w = gw.cli("write", "lamp-01", "lamp_on", word, "--yes")
        assert w.returncode == 0, (word, w.stderr)
        assert w.stdout.startswith(f"lamp-01.lamp_on = {echo} (confirmed"), (word, w.stdout)
    for word in ("40 %", "40%", "40"):  # a number as read shows it, with its unit
        w = gw.cli("write", "lamp-01", "dimming", word, "--yes")
        assert w.returncode == 0 and "dimming = 40 %" in w.stdout, (word, w.stderr)
    w = gw.cli("write", "lamp-01", "light_mode", "Manual", "--yes")
    assert w.returncode == 0 and "light_mode = manual" in w.stdout, w.stderr
    # bounds before the question: on a terminal, no "[y/N]" for a value that cannot go
    code, out = on_a_terminal(gw, "write", "lamp-01", "dimming", "150")
    assert code == 1 and "[y/N]" not in out, out
    assert "150 is above the maximum 100" in out and "Traceback" not in out, out
    err = json.loads(gw.cli("write", "lamp-01", "dimming", "150", "--json").stdout)
    assert err["error"] == "out_of_bounds" and err["exit"] == 1, err
    # what was typed, not what Python made of it
    w = gw.cli("write", "lamp-01", "dimming", "1e400", "--yes")
    assert w.returncode == 2 and "'1e400' is not a finite number" in w.stderr, w.stderr
    assert "inf" not in w.stderr.replace("finite", ""), w.stderr
    w = gw.cli("write", "lamp-01", "lamp_on", "maybe", "--yes")
    assert w.returncode == 2 and "'maybe' is not on/off" in w.stderr, w.stderr


@pytest.mark.timeout(120)
def test_scan_suggests_a_mistyped_bus(gateway: Gateway) -> None:
    """`scan rs485-watr` is a bus name mistyped, not a serial port unplugged: the daemon's
    buses (running) or the config's (stopped) are offered, as `modbus read` does."""
    gw = gateway
    for extra in ([], ["--json"]):
        r = gw.cli("scan", "rs485-watr", "--units", "1-2", *extra)
        assert r.returncode == 2 and "Traceback" not in r.stderr, (r.stdout, r.stderr)
        text = r.stdout if extra else r.stderr
        assert "no bus 'rs485-watr'" in text and "did you mean 'rs485-water'" in text, text
        assert "plugged in" not in text, text
        if extra:
            assert json.loads(r.stdout)["error"] == "unknown_bus", r.stdout
    gw.proc.send_signal(signal.SIGTERM)
    assert gw.proc.wait(20) == 0
    r = gw.cli("scan", "rs485-watr", "--units", "1-2", "--config", str(gw.config))
    assert r.returncode == 2 and "did you mean 'rs485-water'" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.timeout(120)
def test_export_errors_in_json_have_a_code_and_a_hint(gateway: Gateway) -> None:
    r = gateway.cli("buffer", "export", "/nonexistent-dir/x.cbor", "--json")
    assert r.returncode == 1, (r.stdout, r.stderr)
    obj = json.loads(r.stdout)
    assert obj["error"] == "export_failed" and "outbox keeps every batch" in obj["hint"], obj
    assert "no such directory" in obj["message"], obj


WIRE_QUALITY = {"good", "stale", "bad", "out_of_range", "unreadable"}  # docs/wire-format.md


def short(value: object) -> bool:
    """A float as a person reads it: at most 7 significant digits (no 1.3344000577926636)."""
    if not isinstance(value, float):
        return True
    return len(repr(abs(value)).replace(".", "").lstrip("0").rstrip("0")) <= 7


@pytest.mark.timeout(180)
def test_read_and_tail_json_carry_the_same_fields_and_words(gateway: Gateway) -> None:
    gw = gateway
    assert wait(lambda: gw.cli("read", "meter-01", "flow_rate").returncode == 0, 30)
    r = gw.cli("read", "meter-01", "--json", "--readings")
    assert r.returncode == 0, r.stderr
    read = json.loads(r.stdout)
    flow = next(x for x in read if x["point"] == "flow_rate")
    assert flow["unit"] == "m³/h" and flow["quality"] == "good" and flow["age_s"] < 5, flow
    assert all(short(x["value"]) for x in read), read
    t = gw.cli("tail", "--json", "--count", "8", timeout=60)
    assert t.returncode == 0, t.stderr
    tail = [json.loads(line) for line in t.stdout.splitlines()]
    assert len(tail) == 8
    for x in tail:
        assert set(x) == set(flow), (x, flow)  # the same fields
        assert x["quality"] in WIRE_QUALITY and short(x["value"]), x
    assert {x["quality"] for x in read} <= WIRE_QUALITY, read
    exact = gw.cli("tail", "--json", "--count", "1", "--exact", timeout=60)
    assert exact.returncode == 0 and set(json.loads(exact.stdout)) == set(flow), exact.stderr
    # read --json keeps its {point: value} for scripts
    plain = json.loads(gw.cli("read", "meter-01", "valve", "--json").stdout)
    assert plain == {"valve": plain["valve"]} and isinstance(plain["valve"], bool), plain
