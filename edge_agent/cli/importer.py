"""`edge-agent buffer import DIR --broker HOST:PORT`: publish exported batches (a USB stick from a
box whose uplink was dead) to a broker, gateway by gateway in seq order, QoS 1, each one only
counted once the broker acknowledged it. The consumer de-duplicates by gateway + seq, so importing
batches the box later sends itself is harmless."""

from __future__ import annotations

import ssl
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.errors import UplinkError


def exported(directory: Path) -> dict[str, list[Path]]:
    """Gateway → its .cose files in seq order (layout DIR/<gateway>/<seq>.cose)."""
    out: dict[str, list[Path]] = {}
    for gw_dir in sorted(p for p in directory.iterdir() if p.is_dir()):
        files = [f for f in gw_dir.iterdir() if f.suffix == ".cose" and f.stem.isdigit()]
        if files:
            out[gw_dir.name] = sorted(files, key=lambda f: int(f.stem))
    return out


def import_batches(directory: Path, host: str, port: int, *, prefix: str = "edge",
                   tls_ca: str | None = None, window: int = 32,
                   timeout_s: float = 30.0) -> dict[str, int]:
    batches = exported(directory)
    if not batches:
        raise UplinkError(f"{directory}: no <gateway>/<seq>.cose files to import")
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="edge-agent-import")
    if tls_ca:
        client.tls_set_context(ssl.create_default_context(cafile=tls_ca))
    acked: set[int] = set()
    cond = threading.Condition()

    def on_publish(c: mqtt.Client, u: object, mid: int, rc: object, props: object) -> None:
        with cond:
            acked.add(mid)
            cond.notify_all()

    client.on_publish = on_publish
    try:
        client.connect(host, port)
    except OSError as exc:
        raise UplinkError(f"cannot connect to {host}:{port}: {exc}") from exc
    client.loop_start()
    counts: dict[str, int] = {}
    try:
        for gw, files in batches.items():
            pending: list[int] = []
            for f in files:
                info = client.publish(f"{prefix}/{gw}/data", f.read_bytes(), qos=1)
                pending.append(info.mid)
                with cond:
                    while len([m for m in pending if m not in acked]) >= window:
                        if not cond.wait(timeout_s):
                            raise UplinkError("broker stopped acknowledging")
            with cond:
                if not cond.wait_for(lambda p=pending: all(m in acked for m in p), timeout_s):  # type: ignore[misc]
                    raise UplinkError("broker did not acknowledge every batch")
            counts[gw] = len(files)
    finally:
        client.disconnect()
        client.loop_stop()
    return counts
