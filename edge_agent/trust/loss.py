"""The loss notice (batch kind 3): readings the gateway gave up before it ever signed them.

A gap notice names seqs that were signed and then dropped from the outbox. A loss notice names
readings that never got a seq: the pipeline's bounded backlog overflowed while the outbox could
not commit (see ``pipeline.loss``). It is an ordinary link of the chain and carries, instead of
readings, how many readings were given up, how many of them were alarms, their time span, the
devices they came from and why. Keys 15..18 mean what they mean in a gap notice.

An *unclean stop* notice is a loss notice with reason ``unclean_stop``: the daemon run before
this one ended without its clean stop (kill -9, the watchdog, a power cut), so readings it held in
memory and had not committed are gone, and nobody counted them. It carries readings 0 (uncounted,
the only loss notice that may), the span from the last commit of that run to this start, and
every configured device. Written at the next start, before anything else is signed.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge_agent.errors import ContractError
from edge_agent.trust.fields import BadField, int_field

KIND_LOSS = 3
K_READINGS = 15  # readings given up (as in a gap notice)
K_T_FIRST = 16
K_T_LAST = 17
K_REASON = 18
K_DEVICES = 22  # array of tstr, sorted: every device among the readings given up
K_ALARMS = 23  # alarm readings among them
UNCLEAN_STOP = "unclean_stop"  # the reason of the one loss notice that counts no readings


@dataclass(frozen=True, slots=True)
class LossNotice:
    readings: int
    alarms: int
    t_first_ns: int
    t_last_ns: int
    devices: tuple[str, ...]
    reason: str  # e.g. "backlog_full"


def _least(reason: str) -> int:
    """The fewest readings a loss notice with ``reason`` may name."""
    return 0 if reason == UNCLEAN_STOP else 1


def loss_fields(n: LossNotice) -> dict[int, object]:
    if n.readings < _least(n.reason) or not 0 <= n.alarms <= n.readings:
        raise ContractError("a loss notice needs readings >= 1 (0 only for an unclean stop)"
                            " and 0 <= alarms <= readings")  # fmt: skip
    return {
        K_READINGS: n.readings, K_ALARMS: n.alarms, K_T_FIRST: n.t_first_ns,
        K_T_LAST: n.t_last_ns, K_DEVICES: sorted(n.devices), K_REASON: n.reason,
    }  # fmt: skip


def loss_from_map(m: dict[object, object]) -> LossNotice:
    """Parse the loss keys of a decoded payload map (BadField naming the key)."""

    def uint(key: int) -> int:
        v = m.get(key)
        if type(v) is not int or v < 0:
            raise BadField(f"[{key}]", f"expected an unsigned integer, got {v!r}")
        return v

    devices = m.get(K_DEVICES)
    if type(devices) is not list or not all(type(d) is str for d in devices):
        raise BadField(f"[{K_DEVICES}]", "expected an array of device names")
    reason = m.get(K_REASON)
    if type(reason) is not str:
        raise BadField(f"[{K_REASON}]", "expected text")
    readings, alarms = uint(K_READINGS), uint(K_ALARMS)
    if readings < _least(reason) or alarms > readings:
        raise BadField(f"[{K_READINGS}]", f"{readings} readings with {alarms} alarms")
    return LossNotice(readings, alarms, int_field(m, K_T_FIRST), int_field(m, K_T_LAST),
                      tuple(devices), reason)
