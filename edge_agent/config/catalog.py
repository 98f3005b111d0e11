"""What a gateway config names, for the technician's tools: devices with their points (unit,
decimals to show, plausible range, access), buses and component classes.

The daemon answers it over the control socket (op ``catalog``: the config it runs, which may be
newer or older than the file); direct (daemon-less) work builds it from the file. The CLI uses it
to check and suggest names and to show values the way a person reads them; a point's ``report``
(poll interval, heartbeat, every change or a deadband) tells ``tail`` how often to expect it.
"""

from __future__ import annotations

from typing import Any

from edge_agent.config.model import AgentConfig, SerialBus, TcpBus
from edge_agent.profiles.display import decimals, significant
from edge_agent.profiles.model import ModbusPoint, Point, plausible_range


def point_info(p: Point) -> dict[str, Any]:
    """``plausible_range``: where a reading is plausible (``valid_range``, or a writable point's
    min/max; ``profiles.model.plausible_range``): outside it the poller says out_of_range."""
    plausible = plausible_range(p)
    info: dict[str, Any] = {
        "name": p.name, "type": str(p.type), "unit": p.unit, "decimals": decimals(p),
        "digits": significant(p), "valid_range": list(p.valid_range) if p.valid_range else None,
        "plausible_range": list(plausible) if plausible else None,
        "writable": isinstance(p, ModbusPoint) and p.writable,
    }
    if isinstance(p, ModbusPoint):
        info |= {"table": str(p.table), "address": p.address, "count": p.count}
        if p.bounds is not None:
            b = p.bounds
            info["bounds"] = {"min": b.min, "max": b.max, "step": b.step,
                              "allowed": list(b.allowed)}
    if p.enum:
        info["labels"] = [label for _, label in p.enum]
    rep = p.reporting
    info["report"] = {"interval_s": rep.interval_s, "heartbeat_s": rep.heartbeat_s,
                      "on_change": rep.deadband is None or rep.alarm, "alarm": rep.alarm}
    return info


def bus_info(cfg: AgentConfig) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for b in cfg.buses.values():
        if isinstance(b, TcpBus):
            out.append({"name": b.name, "kind": str(b.kind), "host": b.host, "port": b.port})
        elif isinstance(b, SerialBus):
            out.append({"name": b.name, "kind": str(b.kind), "port": b.port, "baud": b.baud,
                        "parity": b.parity, "stopbits": b.stopbits})
    return out


def catalog(cfg: AgentConfig) -> dict[str, Any]:
    devices = []
    for d in cfg.devices:
        prof = cfg.profiles[d.profile]
        devices.append({
            "name": d.name, "profile": d.profile, "class": prof.component_class, "bus": d.bus,
            "unit_id": d.unit_id, "protocol": str(prof.protocol),
            "points": [point_info(p) for p in prof.points],
        })
    return {
        "devices": devices,
        "buses": bus_info(cfg),
        "classes": sorted({d["class"] for d in devices}),
    }
