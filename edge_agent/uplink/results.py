"""Signed results the uplink publishes until the broker acknowledged them.

Two sources travel this way, each on its own topic: command results (commands/results.py) and
rollout results (rollout/results.py). Every session publishes each result not yet published in
it, QoS 1; only its PUBACK marks it acknowledged in the source, so a result lost with a
connection goes out again in the next session (at least once).
"""

from __future__ import annotations

from typing import Protocol

import paho.mqtt.client as paho
from paho.mqtt.reasoncodes import ReasonCode

from edge_agent.uplink.session import OK


class ResultSource(Protocol):
    """Signed command results to publish until the broker acknowledged them (the daemon's
    commands/results.py store); both methods are thread-safe."""

    def unacked(self) -> list[tuple[int, bytes]]:
        """(key, payload) of every result not yet acknowledged, oldest first."""
        ...

    def acked(self, key: int) -> None:
        """The broker acknowledged result ``key`` (its PUBACK)."""
        ...


def publish_unacked(
    client: paho.Client,
    source: ResultSource,
    topic: str,
    sent: set[int],
    inflight: dict[int, int],
) -> None:
    """Every result of ``source`` not in ``sent`` (this session's), until a publish fails;
    ``inflight`` maps each publish's mid to the result's key."""
    for key, payload in source.unacked():
        if key in sent:
            continue
        info = client.publish(topic, payload, qos=1)
        if info.rc != OK:
            return
        sent.add(key)
        inflight[info.mid] = key


def on_puback(
    source: ResultSource | None, inflight: dict[int, int], mid: int, rc: ReasonCode
) -> bool:
    """True when ``mid`` was a result of ``inflight``; acknowledged unless the broker refused it
    (then it goes out again next session)."""
    key = inflight.pop(mid, None)
    if key is None:
        return False
    if source is not None and not rc.is_failure:
        source.acked(key)
    return True
