"""Is the agent healthy? What the watchdog (sd_notify WATCHDOG=1) and `status` go by.

Unhealthy: the poller task ended, the batcher's worker or the uplink thread died, or commits have
been failing for more than COMMIT_FAILING_LIMIT_S (the outbox's own record of failed appends, acks
and marks, and the batcher's retry loop). A disk-full commit that succeeds after dropping old
batches is not a failure; one that cannot be made to succeed is, and withholding the watchdog
lets systemd restart the service (and the operator see it) instead of the agent piling readings
up in memory while pretending to be fine. ``watchdog_loop`` sends WATCHDOG=1 only while healthy.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edge_agent.service.daemon import Agent

log = logging.getLogger("edge_agent")  # the daemon's lines

COMMIT_FAILING_LIMIT_S = 10.0


def commit_state(agent: Agent) -> tuple[str | None, float | None]:
    """(error, seconds failing) of the longest commit failure streak, or (None, None)."""
    err, failing = agent.outbox.health.state()
    b_failing = agent.batcher.failing_s
    if b_failing is not None and (failing is None or b_failing > failing):
        return agent.batcher.last_error or err, round(b_failing, 1)
    return err, failing


def unhealthy_reasons(agent: Agent) -> list[str]:
    reasons: list[str] = []
    task = agent.poll_task
    if task is None or task.done():
        reasons.append("poller not running")
    if not agent.batcher.alive:
        reasons.append("batcher worker died")
    if agent.uplink is not None and not agent.uplink.alive:
        reasons.append("uplink thread died")
    err, failing = commit_state(agent)
    if failing is not None and failing > COMMIT_FAILING_LIMIT_S:
        reasons.append(f"commits failing for {failing:.0f} s: {err}")
    return reasons


def outbox_status(agent: Agent) -> dict[str, Any]:
    """The `status` → outbox section (doctor judges footprint, cap and commit fields)."""
    st = agent.outbox.stats()
    err, failing = commit_state(agent)
    return {
        # failing: commits fail (or one hangs) now; what follows is as of the last commit
        "state": "ok" if failing is None else "failing",
        "depth": st.depth, "bytes": st.bytes, "readings": st.readings,
        "oldest_age_s": round(st.oldest_age_s, 1), "head_seq": st.head_seq,
        "readings_dropped": st.readings_dropped, "gaps": st.gaps,
        "footprint_bytes": st.footprint_bytes, "used_bytes": st.used_bytes,
        "cap_bytes": st.cap_bytes, "budget_bytes": st.budget_bytes,
        "disk_free_bytes": st.disk_free_bytes, "reserve_bytes": st.reserve_bytes,
        "reserve_held": st.reserve_held, "held_through": st.held_through,
        "commit_error": err, "commit_failing_s": failing,
        "backlog_readings": agent.batcher.backlog, "readings_lost": agent.batcher.readings_lost,
    }  # fmt: skip


def healthy(agent: Agent) -> bool:
    reasons = unhealthy_reasons(agent)
    if reasons:
        log.error("unhealthy reasons=%s", "; ".join(reasons))
    return not reasons


async def watchdog_loop(agent: Agent) -> None:
    """WATCHDOG=1 every watchdog interval (10 s without one) while the agent is healthy."""
    interval = agent.notifier.watchdog_interval_s or 10.0
    while True:
        await asyncio.sleep(interval)
        if healthy(agent):
            agent.notifier.watchdog()
        else:
            log.error("watchdog_withheld")
