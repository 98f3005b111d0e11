"""`edge-agent verify`: check signed batches from a directory or live from an MQTT broker.

With ``--state DB`` it is an archiver: what it verified is kept in SQLite and the next run resumes
from it (a report covers every run); with ``--broker`` it holds a persistent MQTT session and
acknowledges a batch only once it is recorded (``--save`` files fsynced, state committed), so
broker restarts and its own crashes lose nothing. ``--save`` never replaces a file.

Exit status: 0 all good, 1 forged / conflicting batches, broken chain or unexplained gaps,
2 usage, key file, state file or connection problems.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import re
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from edge_agent.cli import argtypes
from edge_agent.cli.broker_login import add_login_options, login_from_args
from edge_agent.cli.verify_live import (
    EPHEMERAL_EXPIRY_S,
    SESSION_EXPIRY_S,
    BrokerOptions,
    BrokerSource,
    StopSignals,
    default_client_id,
)
from edge_agent.cli.verify_save import SaveDir, file_order
from edge_agent.errors import EdgeAgentError, KeyFileError, UplinkError, VerifyError
from edge_agent.trust.archive import ArchiveError, iter_archive
from edge_agent.trust.ed25519 import PublicKey
from edge_agent.trust.keys import kid_of, load_public_key
from edge_agent.trust.verify import COUNTERS, ChainVerifier, VerifyReport
from edge_agent.trust.verify_state import VerifyState

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DIR_CHUNK = 1000  # files verified per commit of the state


class _Usage(EdgeAgentError):
    pass


def _load_keys(
    specs: list[str],
) -> tuple[dict[bytes, PublicKey], dict[str, list[bytes]]]:
    """Keys from ``PATH`` or ``GATEWAY=PATH`` (which also binds the key to that gateway)."""
    keys: dict[bytes, PublicKey] = {}
    bindings: dict[str, list[bytes]] = {}
    for spec in specs:
        gateway, sep, rest = spec.partition("=")
        bound = bool(sep) and "/" not in gateway and not Path(spec).exists()
        pub = load_public_key(Path(rest if bound else spec))
        keys[kid_of(pub)] = pub
        if bound:
            bindings.setdefault(gateway, []).append(kid_of(pub))
    return keys, bindings


def iter_dir(directory: Path) -> Iterator[tuple[str, bytes]]:
    """(source, bytes) of every *.cose below ``directory``, per folder in numeric seq order (a
    ``--save`` archive: the first copy of a seq before any conflicting one kept beside it)."""
    if not directory.is_dir():
        raise _Usage(f"{directory}: not a directory")
    for path in sorted(directory.rglob("*.cose"), key=file_order):
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


def _record(
    verifier: ChainVerifier, save: SaveDir | None, items: Iterable[tuple[str, bytes]]
) -> None:
    """Verify (and save) ``items``, then make it all durable: --save files and directories
    fsynced first, then the verifier's state committed."""
    for where, data in items:
        accepted = verifier.feed(data, source=where)
        if save is not None:
            if accepted is None:
                save.reject(data)
            else:
                save.put(accepted.payload.gateway_id, accepted.payload.seq, data)
    if save is not None:
        save.sync()
    verifier.commit()


def _chunks(source: Iterator[tuple[str, bytes]], n: int) -> Iterator[list[tuple[str, bytes]]]:
    chunk: list[tuple[str, bytes]] = []
    for item in source:
        chunk.append(item)
        if len(chunk) >= n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _client_id(args: argparse.Namespace, state: VerifyState) -> str:
    """--client-id, else the one the state keeps (made on its first use), else a fresh one."""
    if args.state is None:
        return str(args.client_id or default_client_id())
    cid = args.client_id or state.meta("client_id") or default_client_id()
    if state.meta("client_id") != cid:
        state.set_meta("client_id", cid)
        state.commit()
    return str(cid)


def _consume_broker(
    args: argparse.Namespace, verifier: ChainVerifier, save: SaveDir | None, state: VerifyState
) -> None:
    host, port = _split_hostport(args.broker)
    opts = BrokerOptions(
        host, port, args.topic, _client_id(args, state), persistent=args.state is not None,
        session_expiry_s=args.session_expiry if args.state is not None else EPHEMERAL_EXPIRY_S,
        protocol=args.protocol, login=login_from_args(args),
    )  # fmt: skip
    source = BrokerSource(opts)
    deadline = None if args.duration is None else time.monotonic() + args.duration
    with StopSignals() as stop:
        source.start()
        try:
            for group in source.groups(stop.event, args.count, deadline):
                _record(verifier, save, ((m.topic, m.payload) for m in group))
                source.ack(group)
        finally:
            source.close()
        if stop.event.is_set():
            print("stopped: reporting what was received", file=sys.stderr)


def _print_report(report: VerifyReport, as_json: bool) -> None:
    if as_json:
        out = dataclasses.asdict(report)
        out["ok"] = report.ok
        print(json.dumps(out, indent=2))
        return
    print(" ".join(f"{f}={getattr(report, f)}" for f in COUNTERS))
    print(f"gateways={','.join(report.gateways) or '-'}")
    for notice in report.notices:
        print(f"notice {notice}")
    for problem in report.problems:
        print(f"problem {problem}")
    print("result=OK" if report.ok else "result=FAILED")


def _broker_warnings() -> None:
    """A consumer on a broker runs for long: its connection warnings (lost, refused) stay on
    stderr, as the one thing of the library logging the CLI otherwise keeps quiet."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    for name in ("edge_agent.cli.verify_live", __name__):
        logging.getLogger(name).addHandler(handler)


def _run(args: argparse.Namespace) -> int:
    if args.broker is not None:
        _broker_warnings()
    try:
        keys, bindings = _load_keys(args.key)
        if args.broker is not None:
            _split_hostport(args.broker)  # fail fast on a bad address
        elif args.dir is not None and not args.dir.is_dir():
            raise _Usage(f"{args.dir}: not a directory")
        state = VerifyState(args.state)
    except (KeyFileError, VerifyError, _Usage, OSError) as exc:
        print(f"edge-agent verify: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        verifier = ChainVerifier(keys, bindings=bindings, state=state)
        save = None if args.save is None else SaveDir(args.save)
        if args.broker is not None:
            _consume_broker(args, verifier, save, state)
        else:
            source = iter_dir(args.dir) if args.dir is not None else iter_archive(args.file)
            for chunk in _chunks(source, DIR_CHUNK):
                _record(verifier, save, chunk)
        report = verifier.summary()
    except ArchiveError as exc:  # a damaged / incomplete export archive fails the check
        print(f"edge-agent verify: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except (UplinkError, _Usage, OSError) as exc:
        print(f"edge-agent verify: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        state.close()
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
    add_login_options(p)  # --tls-ca, --tls-cert/--tls-key, --username/--password-file
    p.add_argument("--count", type=argtypes.whole(1), metavar="N", help="stop after N messages")
    p.add_argument("--duration", type=argtypes.seconds, metavar="S", help="stop after S seconds")
    p.add_argument(
        "--save", type=Path, metavar="DIR",
        help="append-only archive: <gateway>/<seq>.cose (first copy kept; a conflicting one "
        "beside it as <seq>.conflict-<hash>.cose)",
    )  # fmt: skip
    p.add_argument(
        "--state", type=Path, metavar="DB",
        help="SQLite file keeping what was verified, resumed on the next run (an archiver); "
        "with --broker also a persistent session under a client id kept in it",
    )  # fmt: skip
    p.add_argument("--client-id", metavar="ID", help="MQTT client id (default: kept in --state)")
    p.add_argument(
        "--session-expiry", type=argtypes.whole(1, 2**32 - 1), default=SESSION_EXPIRY_S,
        metavar="S",
        help="with --state: how long the broker keeps the session (and queues batches) while "
        "this consumer is away (default 7 days)",
    )  # fmt: skip
    p.add_argument(
        "--protocol", choices=("5", "3.1.1"), default="5",
        help="MQTT version (3.1.1: with --state a session that never expires on the broker, "
        "without it a clean session)",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_run)
