"""`edge-agent buffer import SOURCE... --broker HOST:PORT`: publish exported batches (a USB stick
from a box whose uplink was dead) to a broker, in seq order, QoS 1, each one only counted once the
broker acknowledged it. A SOURCE is an export archive (``buffer export``) or a directory in the
``<gateway>/<seq>.cose`` layout (``verify --save``). Archives are checked whole (structure,
count, digest) before anything is published. The consumer de-duplicates by gateway + seq, so
importing batches the box later sends itself is harmless.

Acknowledgements are tracked by paho message id, which wraps at 65,535: a dict holds the ids in
flight (at most ``window``), each removed by its on_publish, so an id reused after the wrap is
never mistaken for an earlier one.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.errors import UplinkError
from edge_agent.trust.archive import SUFFIX, ArchiveReader, is_archive

Batch = tuple[str, str, bytes]  # gateway, where (file / archive offset), COSE bytes


def exported(directory: Path) -> dict[str, list[Path]]:
    """Gateway → its .cose files in seq order (layout DIR/<gateway>/<seq>.cose)."""
    out: dict[str, list[Path]] = {}
    for gw_dir in sorted(p for p in directory.iterdir() if p.is_dir()):
        files = [f for f in gw_dir.iterdir() if f.suffix == ".cose" and f.stem.isdigit()]
        if files:
            out[gw_dir.name] = sorted(files, key=lambda f: int(f.stem))
    return out


def batches_of(sources: list[Path]) -> tuple[int, Iterator[Batch]]:
    """(how many, the batches) of every source, archives checked first."""
    plan: list[tuple[str, Path, ArchiveReader | list[Path]]] = []
    total = 0
    for src in sources:
        if src.is_dir():
            found = exported(src)
            archives = sorted(f.name for f in src.iterdir() if f.is_file() and is_archive(f))
            if not found and archives:
                shown = ", ".join(archives[:3]) + (f" (+{len(archives) - 3} more)"
                                                   if len(archives) > 3 else "")
                raise UplinkError(f"{src} holds {len(archives)} export archive(s), not a "
                                  f"<gateway>/<seq>.cose tree: pass the file(s): {shown} "
                                  f"(e.g. {src / archives[0]}, or {src}/*{SUFFIX})")
            for gw, files in found.items():
                plan.append((gw, src, files))
                total += len(files)
        elif is_archive(src):
            reader = ArchiveReader(src)
            total += reader.check().batches
            plan.append((reader.header.gateway, src, reader))
        elif src.exists():
            raise UplinkError(f"{src}: neither an export archive nor a directory")
        else:
            raise UplinkError(f"{src}: no such file or directory")
    if total == 0 and not any(isinstance(what, ArchiveReader) for _, _, what in plan):
        raise UplinkError(f"{', '.join(map(str, sources))}: no batches to import")
    # archives of an empty outbox (buffer export of nothing) are valid: 0 batches, said so

    def gen() -> Iterator[Batch]:
        for gw, src, what in plan:
            if isinstance(what, ArchiveReader):
                for offset, data in what.batches():
                    yield gw, f"{src}@{offset}", data
            else:
                for f in what:
                    yield gw, str(f), f.read_bytes()

    return total, gen()


def new_client() -> mqtt.Client:
    return mqtt.Client(CallbackAPIVersion.VERSION2, client_id="edge-agent-import")


class _Acks:
    """Message ids in flight → where the batch came from; on_publish removes them."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.inflight: dict[int, str] = {}
        self.early: set[int] = set()  # acked before publish() returned its id to us
        self.acked = 0

    def on_publish(self, c: mqtt.Client, u: object, mid: int, rc: object, props: object) -> None:
        with self.cond:
            if self.inflight.pop(mid, None) is None:
                self.early.add(mid)
            else:
                self.acked += 1
            self.cond.notify_all()

    def sent(self, mid: int, where: str) -> None:
        with self.cond:
            if mid in self.early:
                self.early.discard(mid)
                self.acked += 1
            elif mid in self.inflight:
                raise UplinkError(f"message id {mid} reused while still in flight")
            else:
                self.inflight[mid] = where

    def wait_below(self, n: int, timeout_s: float, what: str) -> None:
        with self.cond:
            if not self.cond.wait_for(lambda: len(self.inflight) < n, timeout_s):
                oldest = next(iter(self.inflight.values()), "?")
                raise UplinkError(f"broker did not acknowledge {what} within {timeout_s:.0f} s "
                                  f"({len(self.inflight)} in flight, first: {oldest})")


def import_batches(sources: Path | list[Path], host: str, port: int, *, prefix: str = "edge",
                   tls_ca: str | None = None, window: int = 32,
                   timeout_s: float = 30.0) -> dict[str, int]:
    srcs = sources if isinstance(sources, list) else [sources]
    total, batches = batches_of(srcs)
    if total == 0:  # only archives of an empty outbox: nothing to publish, no broker needed
        return {ArchiveReader(s).header.gateway: 0 for s in srcs}
    client = new_client()
    if tls_ca:
        client.tls_set_context(ssl.create_default_context(cafile=tls_ca))
    acks = _Acks()
    connected = threading.Event()
    refused: list[str] = []

    def on_connect(c: mqtt.Client, u: object, flags: object, rc: object, props: object) -> None:
        if getattr(rc, "is_failure", False):
            refused.append(str(rc))
        connected.set()

    client.on_connect = on_connect
    client.on_publish = acks.on_publish
    try:
        client.connect(host, port)
    except (OSError, ssl.SSLError) as exc:
        raise UplinkError(f"cannot connect to {host}:{port}: {exc}") from exc
    client.loop_start()
    counts: dict[str, int] = {}
    try:
        if not connected.wait(timeout_s) or refused:
            raise UplinkError(f"{host}:{port} refused the connection: "
                              f"{refused[0] if refused else 'no CONNACK'}")
        for gw, where, data in batches:
            acks.wait_below(window, timeout_s, "the batches sent")
            info = client.publish(f"{prefix}/{gw}/data", data, qos=1)
            if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                raise UplinkError(f"publish of {where} failed: {mqtt.error_string(info.rc)}")
            acks.sent(info.mid, where)
            counts[gw] = counts.get(gw, 0) + 1
        acks.wait_below(1, timeout_s, "every batch")
    finally:
        client.disconnect()
        client.loop_stop()
    if acks.acked != total:
        raise UplinkError(f"{acks.acked} of {total} batches acknowledged")
    return counts
