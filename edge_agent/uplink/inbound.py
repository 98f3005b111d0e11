"""What the uplink receives: commands, configuration bundles, this gateway's own retained status.

Every session subscribes, right after its CONNACK, to the command topic (``on_command``), the
config topic (``on_config(payload, retained)``: rollout bundles, its SUBACK tells whether bundles
can reach this gateway at all) and, only when the rollout state was lost, to the gateway's own
retained status (``recover``: read before a new status replaces it, handed over once, None when
there was none). The retained chain witness arrives here too (witness.py reads it from the
session). Handlers run in the uplink thread and must not block; one that raises is logged and
never ends the session.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

import paho.mqtt.client as paho
from paho.mqtt.reasoncodes import ReasonCode

from edge_agent.uplink.session import Session, UplinkStats
from edge_agent.uplink.topics import Topics

log = logging.getLogger("edge_agent.uplink.mqtt")  # its lines read as the uplink's


class Handlers(Protocol):
    """The uplink's handlers (MqttUplink's attributes, read when used: they may be set late)."""

    on_command: Callable[[bytes], None] | None
    on_config: Callable[[bytes, bool], None] | None  # configuration bundles: (payload, retained)
    recover: Callable[[bytes | None], None] | None  # set to None once called


class Inbound:
    def __init__(self, topics: Topics, stats: UplinkStats, handlers: Handlers) -> None:
        self.topics = topics
        self.stats = stats
        self.handlers = handlers

    def subscribe(self, sess: Session) -> None:
        """After every CONNACK."""
        client, h = sess.client, self.handlers
        if h.recover is not None:  # first: its retained status comes before any bundle
            client.subscribe(self.topics.status, qos=1)
        if h.on_command is not None:
            client.subscribe(self.topics.command, qos=1)
        if h.on_config is not None:
            sess.config_mid = client.subscribe(self.topics.config, qos=1)[1] or -1

    def on_subscribe(self, sess: Session, mid: int, rcs: list[ReasonCode]) -> None:
        if mid == sess.config_mid:  # the way bundles reach this box (a rollout's probation asks)
            granted = not any(rc.is_failure for rc in rcs)
            if not granted and self.stats.config_subscribed is not False:
                log.warning("uplink_config_subscription_refused topic=%s rc=%s (bundles cannot "
                            "reach this gateway)", self.topics.config, rcs[0] if rcs else "-")
            self.stats.config_subscribed = granted

    def on_message(self, sess: Session, msg: paho.MQTTMessage) -> None:
        if msg.topic == self.topics.status:  # subscribed only to recover the rollout state
            if msg.retain and sess.own_status is None:
                sess.own_status = bytes(msg.payload)
            return
        if msg.topic == self.topics.chain:
            if msg.retain and sess.witness is None:
                sess.witness = bytes(msg.payload)
            return
        on_config, on_command = self.handlers.on_config, self.handlers.on_command
        if msg.topic == self.topics.config and on_config is not None:
            try:
                on_config(bytes(msg.payload), bool(msg.retain))
            except Exception as exc:  # a bad handler must not kill the session
                log.error("uplink_config_handler_failed err=%r", exc)
            return
        if on_command is None or msg.topic != self.topics.command:
            return
        try:
            on_command(bytes(msg.payload))
        except Exception as exc:  # a bad handler must not kill the session
            log.error("uplink_command_handler_failed err=%r", exc)

    def recovered(self, sess: Session) -> None:
        """Past the witness wait (the retained status, subscribed first, has come by then) and
        before the birth status replaces it: hand it to ``recover``, once."""
        recover, self.handlers.recover = self.handlers.recover, None
        if recover is None:
            return
        sess.client.unsubscribe(self.topics.status)
        try:
            recover(sess.own_status)
        except Exception as exc:  # a bad handler must not kill the session
            log.error("uplink_recover_handler_failed err=%r", exc)
