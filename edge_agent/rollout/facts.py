"""What the rollout reads from outside a bundle's own checks: the highest version a retained
status names (to recover a lost state), whether a change moves the uplink (probation must then
prove the new one), and whom a running bundle addresses (the status says so, for `fleet status`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from edge_agent.config.model import AgentConfig
from edge_agent.errors import EdgeAgentError

log = logging.getLogger("edge_agent.rollout")

MAX_TARGETS_SHOWN = 64  # gateway ids of the running bundle's target list in the status


def highest_in_status(status: bytes | None) -> int:
    """The highest configuration version a retained status names (config.highest_version,
    config.version, config.last_rollout.version); 0 for none or a status that is not JSON."""
    try:
        doc = json.loads(status) if status else {}
    except ValueError:
        return 0
    cfg = doc.get("config") if isinstance(doc, dict) else None
    if not isinstance(cfg, dict):
        return 0
    last = cfg.get("last_rollout")
    found = [cfg.get("highest_version"), cfg.get("version"),
             last.get("version") if isinstance(last, dict) else None]
    return max((v for v in found if type(v) is int and v > 0), default=0)


def uplink_moved(old: AgentConfig, new: AgentConfig) -> bool:
    """Does ``new`` send elsewhere (host, port, topic_prefix) than ``old``?"""
    def where(c: AgentConfig) -> tuple[str, int, str] | None:
        u = c.uplink
        return None if u is None else (u.host, u.port, u.topic_prefix)

    return where(new) is not None and where(old) != where(new)


def addressing(bundle_dir: Path) -> dict[str, Any]:
    """Whom the bundle materialised in ``bundle_dir`` addresses: {"selector": ...}, or up to
    ``MAX_TARGETS_SHOWN`` of its gateway ids; {} when its signed original cannot be read."""
    from edge_agent.rollout.bundle import describe_signed  # only with a bundle running

    try:
        d = describe_signed((bundle_dir / "bundle.cose").read_bytes())
    except (OSError, EdgeAgentError) as exc:
        log.debug("rollout_addressing_unknown dir=%s err=%s", bundle_dir, exc)
        return {}
    if d["selector"]:
        return {"selector": d["selector"]}
    return {"targets": d["targets"][:MAX_TARGETS_SHOWN], "targets_total": len(d["targets"])}
