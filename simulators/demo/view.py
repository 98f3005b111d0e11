"""The demo's live view: devices, latest verified values, batches, outbox."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from simulators.demo.run import Demo

SHOW = [("lamp-01", "power"), ("lamp-01", "dimming"), ("env-01", "temperature"),
        ("env-01", "pm2_5"), ("meter-01", "flow_rate"), ("meter-01", "totalizer"),
        ("meter-03", "flow_rate"), ("manhole-01", "water_level"), ("nbiot-1", "csq"),
        ("nbiot-1", "rsrp")]


def render(demo: Demo, st: dict[str, Any], devices: list[dict[str, Any]],
           compact: bool = False) -> str:
    assert demo.consumer is not None
    rep = demo.consumer.report()
    ob = st.get("outbox", {})
    dv = st.get("devices", {})
    up = st.get("uplink", {})
    t = time.monotonic() - demo.t0
    head = (f"t={t:5.1f}s devices up {dv.get('up', '?')}/{dv.get('total', '?')} "
            f"quarantined {dv.get('quarantined', '?')} | signed seq {ob.get('head_seq', '?')} "
            f"| outbox {ob.get('depth', '?')} batches | broker "
            f"{'up' if demo.broker.running else 'DOWN'} uplink "
            f"{'connected' if up.get('connected') else 'disconnected'} | verified "
            f"{rep.batches} batches {rep.readings} readings "
            f"{'OK' if rep.ok else 'PROBLEM'}")
    if compact:
        return head
    latest = demo.consumer.snapshot()
    lines = ["edge-agent demo: street scenario   [b] broker kill/restart  "
             f"[d] kill/revive {'meter-03'}  [q] quit", "", head, "",
             "latest verified values (from signed batches at the consumer):"]
    for key in SHOW:
        if key in latest:
            v, unit = latest[key]
            lines.append(f"  {key[0] + '.' + key[1]:<28} {v!s:>14} {unit}")
    bad = [d for d in devices if d.get("quarantined") or d.get("failures")]
    lines += ["", f"devices with failures ({len(bad)}):"]
    for d in bad[:6]:
        lines.append(f"  {d['name']:<14} bus {d['bus']:<10} failures {d['failures']:<5} "
                     f"quarantined {d['quarantined']}  {d.get('last_error', '')}")
    lines += ["", "events:"] + [f"  {e}" for e in demo.events[-8:]]
    return "\n".join(lines)
