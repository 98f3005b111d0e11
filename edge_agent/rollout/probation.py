"""The probation verdict: is the new configuration doing no worse than the old one?

Pass when, at the end of the window:

* the uplink is connected (when one is configured);
* when the change moved the uplink (``[uplink]`` host, port or topic_prefix): the new uplink is
  proven -- a batch acknowledged and the configuration topic's subscription granted, on the new
  settings (a restart-only change: the process counting them started on them). A box connected
  to "some broker" where nothing it sends arrives and no bundle reaches it would be stranded:
  ``uplink_unproven`` rolls it back;
* the share of devices answering is at least ``min_up_ratio`` times the share before the change.
  A device answers when it has answered (under this configuration: the poller starts afresh
  with it) and not failed more than ``TOLERATED_FAILURES`` times in a row since -- one lost
  answer on a busy line is not a verdict; one that failed without ever answering, or more often
  than that, is down; one not polled yet counts for neither side (choose a window longer than
  the devices' shortest poll interval);
* the daemon did not crash-loop on it (checked at start: ``boot``).

Pure functions over snapshots: the daemon takes them, the tests feed them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

MAX_STARTS = 3  # daemon starts on a bundle in probation before it counts as a crash loop
MAX_FAILING = 10  # devices named in the evidence
TOLERATED_FAILURES = 2  # in a row, by a device that answered: still up


@dataclass(frozen=True, slots=True)
class Snapshot:
    uplink_connected: bool | None  # None: no uplink configured
    up: int
    down: int
    total: int
    failing: tuple[str, ...] = field(default=())
    batches_acked: int = 0  # by the broker, since this process started
    sessions: int = 0  # uplink sessions that reached CONNACK, since this process started
    config_subscribed: bool | None = None  # the config topic's SUBACK granted (None: no answer)

    @property
    def ratio(self) -> float | None:
        judged = self.up + self.down
        return None if judged == 0 else self.up / judged


def device_snapshot(devices: Mapping[str, Mapping[str, Any]], total: int,
                    uplink_connected: bool | None, batches_acked: int = 0,
                    config_subscribed: bool | None = None, sessions: int = 0) -> Snapshot:
    """From the poller's per-device status (``poll.status.DeviceStatus``)."""
    up = down = 0
    failing: list[tuple[str, str]] = []
    for name, d in devices.items():
        failures = d["consecutive_failures"]
        if failures > (TOLERATED_FAILURES if d["last_good_ns"] else 0):
            down += 1
            failing.append((name, d["last_error"]))
        elif d["last_good_ns"]:
            up += 1
    named = tuple(f"{name}: {err or 'failing'}"[:160]
                  for name, err in sorted(failing)[:MAX_FAILING])
    return Snapshot(uplink_connected, up, down, total, named, batches_acked=batches_acked,
                    sessions=sessions, config_subscribed=config_subscribed)


def judge(before: Snapshot, after: Snapshot, min_up_ratio: float, *,
          uplink_moved: bool = False) -> str:
    """"" when the change passes, else the reason (``uplink_unproven``, ``uplink_down``,
    ``devices_worse``)."""
    if uplink_moved and after.uplink_connected is not None and not (
            after.batches_acked > 0 and after.config_subscribed):
        # never reached: down; reached (perhaps now connected) but nothing proven: unproven
        return "uplink_down" if after.sessions == 0 else "uplink_unproven"
    if after.uplink_connected is False:
        return "uplink_down"
    b, a = before.ratio, after.ratio
    if a is not None and b is not None and a + 1e-9 < b * min_up_ratio:
        return "devices_worse"
    return ""  # (nothing judged on one side: no evidence against the change)


def evidence(before: Snapshot, after: Snapshot, *, min_up_ratio: float, window_s: int,
             starts: int, uplink_moved: bool = False) -> dict[str, Any]:
    moved = {"uplink_moved": True, "batches_acked": after.batches_acked,
             "config_subscribed": after.config_subscribed, "sessions": after.sessions} \
        if uplink_moved else {}
    return {**moved, "uplink_connected": after.uplink_connected, "up": after.up,
            "down": after.down,
            "total": after.total, "before_up": before.up, "before_down": before.down,
            "before_total": before.total, "min_up_ratio": min_up_ratio, "window_s": window_s,
            "starts": starts, "failing": list(after.failing)}
