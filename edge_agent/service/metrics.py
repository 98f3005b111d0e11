"""Optional Prometheus textfile output ([health] prometheus_textfile), for node_exporter's
textfile collector. Written atomically (temp file + rename) every status interval
(``metrics_loop``; a failing write is logged once, then again when it recovers)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from edge_agent.platform.files import write_public

if TYPE_CHECKING:
    from edge_agent.service.daemon import Agent

log = logging.getLogger("edge_agent")  # the daemon's lines


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


def render_metrics(agent: Agent) -> str:
    st = agent.status()
    ob, dv, up = st["outbox"], st["devices"], st["uplink"]
    gw = _label(agent.cfg.gateway_id)
    lines = [
        "# HELP edge_agent_outbox_batches Signed batches waiting for the broker's PUBACK.",
        "# TYPE edge_agent_outbox_batches gauge",
        f'edge_agent_outbox_batches{{gateway="{gw}"}} {ob["depth"]}',
        "# TYPE edge_agent_outbox_bytes gauge",
        f'edge_agent_outbox_bytes{{gateway="{gw}"}} {ob["bytes"]}',
        "# TYPE edge_agent_outbox_oldest_age_seconds gauge",
        f'edge_agent_outbox_oldest_age_seconds{{gateway="{gw}"}} {ob["oldest_age_s"]}',
        "# HELP edge_agent_readings_dropped_total Readings dropped by the outbox cap.",
        "# TYPE edge_agent_readings_dropped_total counter",
        f'edge_agent_readings_dropped_total{{gateway="{gw}"}} {ob["readings_dropped"]}',
        "# HELP edge_agent_outbox_footprint_bytes The outbox's files on disk (bounded by its cap).",
        "# TYPE edge_agent_outbox_footprint_bytes gauge",
        f'edge_agent_outbox_footprint_bytes{{gateway="{gw}"}} {ob["footprint_bytes"]}',
        "# TYPE edge_agent_outbox_budget_bytes gauge",
        f'edge_agent_outbox_budget_bytes{{gateway="{gw}"}} {ob["budget_bytes"]}',
        "# HELP edge_agent_outbox_commit_failing_seconds How long commits have failed (0: fine).",
        "# TYPE edge_agent_outbox_commit_failing_seconds gauge",
        f'edge_agent_outbox_commit_failing_seconds{{gateway="{gw}"}} '
        f'{ob["commit_failing_s"] or 0}',
        "# HELP edge_agent_readings_lost_total Readings given up unsigned (loss notices).",
        "# TYPE edge_agent_readings_lost_total counter",
        f'edge_agent_readings_lost_total{{gateway="{gw}"}} {ob["readings_lost"]}',
        "# TYPE edge_agent_healthy gauge",
        f'edge_agent_healthy{{gateway="{gw}"}} {int(bool(st["healthy"]))}',
        "# TYPE edge_agent_batches_committed_total counter",
        f'edge_agent_batches_committed_total{{gateway="{gw}"}} {st["batches_committed"]}',
        "# TYPE edge_agent_uplink_connected gauge",
        f'edge_agent_uplink_connected{{gateway="{gw}"}} {int(bool(up.get("connected")))}',
        "# TYPE edge_agent_clock_synced gauge",
        f'edge_agent_clock_synced{{gateway="{gw}"}} {int(bool(st["clock_synced"]))}',
        "# TYPE edge_agent_devices gauge",
    ]
    for state in ("up", "down", "not_yet_polled", "quarantined"):
        lines.append(f'edge_agent_devices{{gateway="{gw}",state="{state}"}} {dv[state]}')
    lines += ["# TYPE edge_agent_device_failures_total counter",
              "# TYPE edge_agent_device_missed_deadlines_total counter"]
    for d in agent.devices():
        lab = f'gateway="{gw}",device="{_label(d["name"])}",bus="{_label(d["bus"])}"'
        lines.append(f"edge_agent_device_failures_total{{{lab}}} {d['failures']}")
        lines.append(f"edge_agent_device_missed_deadlines_total{{{lab}}} {d['missed_deadlines']}")
    return "\n".join(lines) + "\n"


def write_metrics(agent: Agent, path: Path) -> None:
    """Atomically, mode 0644: node_exporter is no member of the service's groups."""
    write_public(path, render_metrics(agent))


async def metrics_loop(agent: Agent, path: Path) -> None:
    interval = agent.cfg.uplink.status_interval_s if agent.cfg.uplink else 15.0
    failing = False
    while True:
        try:
            await asyncio.to_thread(write_metrics, agent, path)
            if failing:
                failing = False
                log.info("metrics_recovered path=%s", path)
        except OSError as exc:
            if not failing:
                failing = True
                log.warning("metrics_write_failed path=%s err=%s", path, exc)
        await asyncio.sleep(interval)
