"""What `edge-agent status` / `devices` show, assembled from the running stages."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import edge_agent
from edge_agent.service.health import outbox_status, unhealthy_reasons

if TYPE_CHECKING:
    from edge_agent.service.daemon import Agent

log = logging.getLogger(__name__)


def _section(reasons: list[str], name: str, build: Callable[[], Any]) -> Any:
    """One section of the status; one that cannot be built (a disk that fails under it) is
    reported as failed — ``{"failed": why}`` and an unhealthy reason — never the whole status."""
    try:
        return build()
    except Exception as exc:
        log.error("status_section_failed section=%s err=%r", name, exc)
        reasons.append(f"status: {name} unreadable: {exc}")
        return {"failed": f"{type(exc).__name__}: {exc}"}


def agent_status(agent: Agent) -> dict[str, Any]:
    reasons = unhealthy_reasons(agent)
    devs = agent.poller.status() if agent.poller is not None else {}
    up = sum(1 for d in devs.values() if d["consecutive_failures"] == 0 and d["last_good_ns"])
    down = sum(1 for d in devs.values() if d["consecutive_failures"] > 0)
    quarantined = sum(1 for d in devs.values() if d["quarantined"])
    errors = [f"{n}: {d['last_error']}" for n, d in devs.items()
              if d["consecutive_failures"] and d["last_error"]]
    clock = agent.clock.state()
    uplink: dict[str, Any] = {"configured": agent.uplink is not None}
    if agent.uplink is not None:
        s = agent.uplink.stats
        # an error from before the current session is history, not the state: once connected
        # (and every acknowledgement saved) the uplink shows none
        current = not s.connected or s.ack_pending > 0
        uplink |= {"connected": s.connected, "sessions": s.sessions, "published": s.published,
                   "acked": s.acked, "ack_pending": s.ack_pending,
                   "ack_failures": s.ack_failures,
                   "last_error": (s.last_error or "-") if current else "-"}
    box = _section(reasons, "outbox", lambda: outbox_status(agent))
    config = _section(reasons, "config", lambda: agent.rollout.config_state()
                      if agent.rollout is not None else None)  # fmt: skip
    return {
        "gateway_id": agent.cfg.gateway_id,
        "version": edge_agent.__version__,
        "boot_id": clock.boot_id,
        "uptime_s": round(time.monotonic() - agent.started_mono, 1),
        "clock_synced": clock.synced,
        "clock_source": agent.clock.source,
        "uplink": uplink,
        "outbox": box,
        "healthy": not reasons, "unhealthy": reasons,
        "devices": {"total": len(agent.cfg.devices), "up": up, "down": down,
                    "not_yet_polled": len(devs) - up - down, "quarantined": quarantined},
        "batches_committed": agent.batcher.committed_batches,
        "readings_polled": agent.poller.readings_made if agent.poller is not None else 0,
        "readings_emitted": agent.poller.readings_emitted if agent.poller is not None else 0,
        "last_errors": errors[:10],
        # which configuration runs (local or a bundle), pinned, the last rollout
        "config": config,
    }


def device_rows(agent: Agent) -> list[dict[str, Any]]:
    devs = agent.poller.status() if agent.poller is not None else {}
    classes = {d.name: agent.cfg.profiles[d.profile].component_class for d in agent.cfg.devices}
    rows = []
    for name, d in devs.items():
        rows.append({
            "name": name, "bus": d["bus"], "unit_id": d["unit"], "class": classes.get(name, ""),
            "last_good_ns": d["last_good_ns"], "failures": d["failures"],
            "quarantined": d["quarantined"], "missed_deadlines": d["missed_deadlines"],
            "timeout_ms": round(d["timeout_s"] * 1000, 1), "last_error": d["last_error"],
            "unreadable": d["unreadable"], "breaks": d["breaks"],
            # 0: answering now (any last_error is history, from before it recovered)
            "consecutive_failures": d["consecutive_failures"],
        })
    return rows
