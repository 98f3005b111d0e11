"""`edge-agent verify`: check signed batches from a directory or live from an MQTT broker.

Exit status: 0 all good, 1 forged / conflicting batches, broken chain or unexplained gaps,
2 usage, key file or connection problems.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import queue
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge_agent.errors import EdgeAgentError, KeyFileError
from edge_agent.retry import RetryPolicy
from edge_agent.trust.archive import ArchiveError, iter_archive
from edge_agent.trust.keys import kid_of, load_public_key
from edge_agent.trust.verify import ChainVerifier, VerifyReport

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")


class _Usage(EdgeAgentError):
    pass


def _load_keys(
    specs: list[str],
) -> tuple[dict[bytes, Ed25519PublicKey], dict[str, list[bytes]]]:
    """Keys from ``PATH`` or ``GATEWAY=PATH`` (which also binds the key to that gateway)."""
    keys: dict[bytes, Ed25519PublicKey] = {}
    bindings: dict[str, list[bytes]] = {}
    for spec in specs:
        gateway, sep, rest = spec.partition("=")
        bound = bool(sep) and "/" not in gateway and not Path(spec).exists()
        pub = load_public_key(Path(rest if bound else spec))
        keys[kid_of(pub)] = pub
        if bound:
            bindings.setdefault(gateway, []).append(kid_of(pub))
    return keys, bindings


def _seq_order(path: Path) -> tuple[str, int, str]:
    stem = path.stem
    return (str(path.parent), int(stem) if stem.isdigit() else -1, path.name)


def iter_dir(directory: Path) -> Iterator[tuple[str, bytes]]:
    """(source, bytes) of every *.cose below ``directory``, per folder in numeric seq order."""
    if not directory.is_dir():
        raise _Usage(f"{directory}: not a directory")
    for path in sorted(directory.rglob("*.cose"), key=_seq_order):
        yield str(path), path.read_bytes()


def _split_hostport(text: str) -> tuple[str, int]:
    m = re.fullmatch(r"\[([^\]]+)\]:(\d+)|([^:]+):(\d+)", text)
    if m is None:
        raise _Usage(f"--broker {text!r}: expected HOST:PORT")
    host = m.group(1) or m.group(3)
    port = int(m.group(2) or m.group(4))
    if not 0 < port < 65536:
        raise _Usage(f"--broker {text!r}: port out of range")
    return host, port


def iter_broker(args: argparse.Namespace) -> Iterator[tuple[str, bytes]]:
    """(topic, payload) of messages from the broker until --count or --duration is reached."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    host, port = _split_hostport(args.broker)
    inbox: queue.Queue[tuple[str, bytes]] = queue.Queue()
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"edge-verify-{os.getpid()}", clean_session=True
    )
    policy = RetryPolicy()
    client.reconnect_delay_set(min_delay=max(1, int(policy.initial_s)), max_delay=int(policy.max_s))
    if args.tls_ca is not None:
        client.tls_set(ca_certs=str(args.tls_ca))

    def on_connect(c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if rc.is_failure:
            log.warning("mqtt_connect_failed broker=%s rc=%s", args.broker, rc)
            return
        c.subscribe(args.topic, qos=1)

    def on_subscribe(_c: mqtt.Client, _u: Any, _mid: int, rcs: Any, _p: Any) -> None:
        print(f"subscribed broker={args.broker} topic={args.topic}", file=sys.stderr, flush=True)

    def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        inbox.put((msg.topic, bytes(msg.payload)))

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    try:
        client.connect(host, port, keepalive=30)
    except OSError as exc:
        raise _Usage(f"--broker {args.broker}: cannot connect: {exc}") from None
    client.loop_start()
    deadline = None if args.duration is None else time.monotonic() + args.duration
    received = 0
    try:
        while args.count is None or received < args.count:
            timeout = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
            if timeout <= 0:
                break
            try:
                item = inbox.get(timeout=timeout)
            except queue.Empty:
                continue
            received += 1
            yield item
    finally:
        client.disconnect()
        client.loop_stop()


def _save(save_dir: Path, gateway: str | None, seq: int | None, data: bytes) -> None:
    if gateway is None or seq is None:
        target = save_dir / "_rejected" / f"{hashlib.sha256(data).hexdigest()[:32]}.cose"
    else:
        target = save_dir / (_SAFE_NAME.sub("_", gateway) or "_") / f"{seq}.cose"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(target)


def _print_report(report: VerifyReport, as_json: bool) -> None:
    if as_json:
        out = dataclasses.asdict(report)
        out["ok"] = report.ok
        print(json.dumps(out, indent=2))
        return
    fields = (
        "batches", "gap_notices", "resumes", "readings", "readings_dropped", "duplicates",
        "conflicts", "gaps_explained", "gaps_unexplained", "forged", "broken_chain",
        "links_checked", "links_unchecked", "late", "contradicted", "loss_notices", "readings_lost",
    )  # fmt: skip
    print(" ".join(f"{f}={getattr(report, f)}" for f in fields))
    print(f"gateways={','.join(report.gateways) or '-'}")
    for problem in report.problems:
        print(f"problem {problem}")
    print("result=OK" if report.ok else "result=FAILED")


def _run(args: argparse.Namespace) -> int:
    try:
        keys, bindings = _load_keys(args.key)
        if args.dir is not None:
            source = iter_dir(args.dir)
        elif args.file is not None:
            source = iter_archive(args.file)
        else:
            _split_hostport(args.broker)  # fail fast on a bad address
            source = iter_broker(args)
        verifier = ChainVerifier(keys, bindings=bindings)
        try:
            for where, data in source:
                accepted = verifier.feed(data, source=where)
                if args.save is not None:
                    if accepted is None:
                        _save(args.save, None, None, data)
                    else:
                        p = accepted.payload
                        _save(args.save, p.gateway_id, p.seq, data)
        except KeyboardInterrupt:
            print("interrupted: reporting what was received", file=sys.stderr)
    except ArchiveError as exc:  # a damaged / incomplete export archive fails the check
        print(f"edge-agent verify: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except (KeyFileError, _Usage, OSError) as exc:
        print(f"edge-agent verify: {exc}", file=sys.stderr)
        return EXIT_USAGE
    report = verifier.summary()
    _print_report(report, args.json)
    return EXIT_OK if report.ok else EXIT_FAILED


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "verify",
        help="verify signed batches (signatures, seq continuity, hash chain, gap notices)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--key", action="append", required=True, metavar="[GATEWAY=]PUB.pem",
        help="gateway public key (PEM or raw 32 bytes); GATEWAY= binds it to that gateway only; "
        "repeat for several gateways",
    )  # fmt: skip
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dir", type=Path, help="verify every *.cose file below DIR")
    src.add_argument("--file", type=Path, metavar="ARCHIVE",
                     help="verify an export archive (`edge-agent buffer export`)")
    src.add_argument("--broker", metavar="HOST:PORT", help="subscribe to an MQTT broker")
    p.add_argument(
        "--topic", default="edge/+/data", help="subscription, e.g. '$share/grp/edge/+/data'"
    )
    p.add_argument("--tls-ca", type=Path, metavar="F", help="CA file: connect with TLS")
    p.add_argument("--count", type=int, metavar="N", help="stop after N messages")
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    p.add_argument("--save", type=Path, metavar="DIR", help="write <gateway>/<seq>.cose here")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_run)
