"""Publish one message and wait for one reply on another topic (paho-mqtt 2.x, QoS 1)."""

from __future__ import annotations

import ssl
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.errors import UplinkError


def request_response(
    host: str, port: int, topic: str, reply_topic: str, payload: bytes, wait_s: float,
    tls_ca: str | None = None,
) -> bytes | None:
    got: list[bytes] = []
    subscribed = threading.Event()
    done = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    if tls_ca:
        client.tls_set_context(ssl.create_default_context(cafile=tls_ca))

    def on_connect(c: mqtt.Client, u: object, flags: object, rc: object, props: object) -> None:
        c.subscribe(reply_topic, qos=1)

    def on_subscribe(c: mqtt.Client, u: object, mid: int, rcs: object, props: object) -> None:
        subscribed.set()

    def on_message(c: mqtt.Client, u: object, msg: mqtt.MQTTMessage) -> None:
        got.append(bytes(msg.payload))
        done.set()

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    try:
        client.connect(host, port)
    except OSError as exc:
        raise UplinkError(f"cannot connect to {host}:{port}: {exc}") from exc
    client.loop_start()
    try:
        if not subscribed.wait(wait_s):
            raise UplinkError("broker did not confirm the subscription")
        client.publish(topic, payload, qos=1).wait_for_publish(wait_s)
        done.wait(wait_s)
    finally:
        client.disconnect()
        client.loop_stop()
    return got[0] if got else None
