"""The demo's live view: devices, latest verified values, batches, outbox.

``render`` fits the terminal (80x24 at least): title and keys first, then the state, values in
two columns, failing devices and as many recent events as there is room for; every line is cut to
the width. ``Screen`` draws it on the alternate screen, overwriting in place (no full clear, so
nothing floods the scrollback), and gives the normal screen back on exit.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

from edge_agent.profiles.display import format_number

if TYPE_CHECKING:
    from simulators.demo.run import Demo

SHOW = [("lamp-01", "power"), ("lamp-01", "dimming"), ("env-01", "temperature"),
        ("env-01", "pm2_5"), ("meter-01", "flow_rate"), ("meter-01", "totalizer"),
        ("meter-03", "flow_rate"), ("manhole-01", "water_level"), ("nbiot-1", "csq"),
        ("nbiot-1", "rsrp")]


def status_line(demo: Demo, st: dict[str, Any]) -> str:
    assert demo.consumer is not None
    rep = demo.consumer.report()
    ob = st.get("outbox", {})
    dv = st.get("devices", {})
    up = st.get("uplink", {})
    t = time.monotonic() - demo.t0
    return (f"t={t:5.1f}s devices up {dv.get('up', '?')}/{dv.get('total', '?')} "
            f"quarantined {dv.get('quarantined', '?')} | signed seq {ob.get('head_seq', '?')} "
            f"| outbox {ob.get('depth', '?')} batches | broker "
            f"{'up' if demo.broker.running else 'DOWN'} uplink "
            f"{'connected' if up.get('connected') else 'disconnected'} | verified "
            f"{rep.batches} batches {rep.readings} readings "
            f"{'OK' if rep.ok else 'PROBLEM'}")


def _value(v: Any) -> str:
    return format_number(v, digits=5) if isinstance(v, float) else str(v)


def _cell(key: tuple[str, str], value: Any, unit: str, quality: str) -> str:
    """``meter-01.flow_rate   0.4729 m³/h`` in 37 columns; without a value its quality (``BAD
    TIMEOUT``), never ``None``; a value that is not good is marked (``STALE``, ``RANGE``)."""
    name = f"{key[0]}.{key[1]}"
    if value is None:
        return f"{name:<20} {quality.upper() or 'NO VALUE'}"[:37]
    kind = quality.split()[0] if quality else "good"
    mark = "" if kind == "good" else " " + {"out_of_range": "RANGE"}.get(kind, kind.upper())
    return f"{name:<20}{_value(value):>9} {unit}{mark}"[:37]


def render(demo: Demo, st: dict[str, Any], devices: list[dict[str, Any]],
           compact: bool = False, width: int = 80, height: int = 24) -> str:
    if compact:
        return status_line(demo, st)
    assert demo.consumer is not None
    rep = demo.consumer.report()
    ob, dv, up = st.get("outbox", {}), st.get("devices", {}), st.get("uplink", {})
    t = time.monotonic() - demo.t0
    lines = [f"edge-agent demo: street scenario  t={t:.0f}s",
             "keys: [b] kill/restart broker  [d] kill/revive meter-03  [q] quit",
             f"devices up {dv.get('up', '?')}/{dv.get('total', '?')}, quarantined "
             f"{dv.get('quarantined', '?')}   broker {'up' if demo.broker.running else 'DOWN'}, "
             f"uplink {'connected' if up.get('connected') else 'disconnected'}",
             f"signed seq {ob.get('head_seq', '?')}, outbox {ob.get('depth', '?')} batches   "
             f"verified {rep.batches} batches, {rep.readings} readings: "
             f"{'OK' if rep.ok else 'PROBLEM'}",
             "", "latest verified values (signed batches, at the consumer):"]
    latest = demo.consumer.snapshot()
    cells = [_cell(k, *latest[k]) for k in SHOW if k in latest]
    half = (len(cells) + 1) // 2
    for i in range(half):
        right = cells[i + half] if i + half < len(cells) else ""
        lines.append(f"  {cells[i]:<38}{right}")
    bad = [d for d in devices if d.get("quarantined") or d.get("consecutive_failures")]
    lines.append(f"failing devices: {len(bad)}")
    for d in bad[:3]:
        state = "quarantined" if d.get("quarantined") else "down"
        lines.append(f"  {d['name']:<12} {state:<11} failures {d['failures']:<4} "
                     f"{d.get('last_error', '')}")
    room = max(1, height - 1 - len(lines) - 1)
    lines.append("events:")
    lines += [f"  {e}" for e in demo.events[-room:]]
    return "\n".join(ln[:width] for ln in lines[: height - 1])


class Screen:
    """The alternate screen, redrawn in place."""

    def __init__(self, out: TextIO = sys.stdout) -> None:
        self.out = out
        self.active = False

    def __enter__(self) -> Screen:
        self.out.write("\x1b[?1049h\x1b[?25l")  # alternate screen, cursor hidden
        self.out.flush()
        self.active = True
        return self

    def draw(self, text: str) -> None:
        # home, each line then clear its rest, clear below: no scrollback, no flicker
        body = "\x1b[K\r\n".join(text.splitlines())
        self.out.write(f"\x1b[H{body}\x1b[K\x1b[J")
        self.out.flush()

    def __exit__(self, *exc: object) -> None:
        if self.active:
            try:
                self.out.write("\x1b[?25h\x1b[?1049l")
                self.out.flush()
            except OSError:  # the terminal is gone (hang-up)
                pass
            self.active = False
