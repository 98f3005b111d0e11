"""The checks of `edge-agent doctor` that talk to something: Modbus TCP endpoints and the broker
(a TCP connect with a short timeout, the TLS handshake when [uplink.tls] is set), and the running
daemon's own view over the control socket (uplink, devices, outbox health, clock).

A Modbus TCP endpoint that the daemon is polling successfully is not connected to again: many
field devices accept one connection only, and a second one can cost the daemon its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import socket
import ssl
import time
from pathlib import Path
from typing import Any

from edge_agent.cli.doctor_checks import EXPIRY_WARN_DAYS, FAIL, PASS, SKIP, WARN, Check
from edge_agent.config.model import AgentConfig, TcpBus

CONNECT_TIMEOUT_S = 3.0
SETTLE_S = 60.0  # a daemon younger than this may still be connecting: WARN, not FAIL
FRESH_S = 300.0  # a device read within this is "answering"


async def _connect(host: str, port: int, timeout: float) -> str | None:
    """None when a TCP connection opens, else why not."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except TimeoutError:
        return f"no answer within {timeout:.0f} s"
    except OSError as exc:
        return exc.strerror or str(exc)
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return None


def check_endpoints(cfg: AgentConfig, devices: list[dict[str, Any]] | None,
                    timeout: float = CONNECT_TIMEOUT_S) -> list[Check]:
    """One line per Modbus TCP endpoint, all connected to at once."""
    buses = [b for b in cfg.buses.values() if isinstance(b, TcpBus)]
    now_ns = time.time_ns()
    polled: dict[str, tuple[int, int]] = {}
    for d in devices or []:
        fresh = d.get("last_good_ns") and now_ns - int(d["last_good_ns"]) < FRESH_S * 1e9
        up, total = polled.get(str(d.get("bus")), (0, 0))
        polled[str(d.get("bus"))] = (up + (1 if fresh and not d.get("failures") else 0),
                                     total + 1)
    out: dict[str, Check] = {}
    probe: list[TcpBus] = []
    for b in buses:
        up, total = polled.get(b.name, (0, 0))
        if up:
            out[b.name] = Check(f"endpoint {b.name}", PASS, f"{b.host}:{b.port}: the daemon "
                                f"polls it ({up} of {total} devices answering)")
        else:
            probe.append(b)

    async def all_of() -> list[str | None]:
        return await asyncio.gather(*(_connect(b.host, b.port, timeout) for b in probe))

    for b, err in zip(probe, asyncio.run(all_of()) if probe else [], strict=True):
        if err is None:
            out[b.name] = Check(f"endpoint {b.name}", PASS, f"{b.host}:{b.port} reachable")
        else:
            out[b.name] = Check(f"endpoint {b.name}", FAIL, f"{b.host}:{b.port}: {err}",
                                "powered? cabled? the right address in agent.toml? "
                                "`edge-agent read DEVICE` once it answers")
    return [out[b.name] for b in buses]


def check_broker(cfg: AgentConfig, timeout: float = CONNECT_TIMEOUT_S) -> list[Check]:
    up = cfg.uplink
    if up is None:
        return [Check("broker", PASS, "no uplink configured (local only)")]
    where = f"{up.host}:{up.port}"
    try:
        raw = socket.create_connection((up.host, up.port), timeout=timeout)
    except OSError as exc:
        return [Check("broker", FAIL, f"{where}: {exc.strerror or exc}",
                      "network / APN / firewall? the broker up? the outbox keeps data meanwhile")]
    with raw:
        if up.tls is None:
            return [Check("broker", PASS, f"{where} reachable (plain MQTT, no TLS)")]
        try:
            ctx = ssl.create_default_context(cafile=str(up.tls.ca_file))
        except (OSError, ssl.SSLError) as exc:
            return [Check("broker", SKIP, f"{where} reachable; TLS not tried: CA file: {exc}")]
        note = ""
        if up.tls.cert_file is not None:
            try:
                ctx.load_cert_chain(str(up.tls.cert_file),
                                    str(up.tls.key_file) if up.tls.key_file else None)
            except (OSError, ssl.SSLError) as exc:
                note = f" (without the client certificate: {exc})"
        try:
            with ctx.wrap_socket(raw, server_hostname=up.host) as tls:
                version, peer = tls.version(), tls.getpeercert() or {}
        except (OSError, ssl.SSLError) as exc:
            return [Check("broker", FAIL, f"{where}: TLS handshake failed: {exc}{note}",
                          "[uplink.tls] ca_file the broker's issuer? the host name in its "
                          "certificate? the clock right?")]
    checks = [Check("broker", PASS, f"{where} TLS handshake ok ({version}){note}")]
    expires = peer.get("notAfter")
    if expires:
        left = (dt.datetime.fromtimestamp(ssl.cert_time_to_seconds(str(expires)), dt.UTC)
                - dt.datetime.now(dt.UTC)).days
        if left < EXPIRY_WARN_DAYS:
            checks.append(Check("broker cert", WARN, f"the broker's certificate expires in "
                                f"{left} days ({expires})", "tell whoever runs the broker"))
    return checks


def daemon_view(sock: Path, cfg: AgentConfig | None) -> tuple[list[Check], dict[str, Any] | None,
                                                               list[dict[str, Any]] | None]:
    """The running daemon's own view: (checks, status, device rows); no daemon: a WARN."""
    from edge_agent.control.client import (
        ControlClient,
        ControlNotPermitted,
        ControlRefused,
        ControlUnavailable,
    )

    try:
        with ControlClient(sock, timeout_s=5.0) as c:
            status = c.result("status")
            devices = c.result("devices")
    except ControlUnavailable as exc:
        if isinstance(exc, ControlNotPermitted):
            return [Check("daemon", SKIP, f"{sock}: permission denied: you are not in the "
                          "control socket's group", "ask for the edge-agent group: "
                          "`sudo adduser $USER edge-agent`, then log in again")], None, None
        return [Check("daemon", WARN, f"not running or not reachable ({exc})",
                      "`systemctl status edge-agent`; `journalctl -u edge-agent -e`")], None, None
    except (ControlRefused, TimeoutError, OSError) as exc:
        return [Check("daemon", FAIL, f"{sock}: did not answer status: {exc}",
                      "`journalctl -u edge-agent -e`")], None, None
    return _judge(status, devices, cfg), status, devices


def _judge(st: dict[str, Any], devices: list[dict[str, Any]],
           cfg: AgentConfig | None) -> list[Check]:
    uptime = float(st.get("uptime_s") or 0)
    settling = uptime < SETTLE_S
    out = [Check("daemon", PASS, f"running: {st.get('gateway_id')} version {st.get('version')}, "
                 f"up {uptime:.0f} s")]
    up = st.get("uplink") or {}
    if up.get("configured"):
        if up.get("connected"):
            out.append(Check("uplink", PASS, f"connected; {up.get('acked')} batches "
                             "acknowledged since start"))
        else:
            out.append(Check("uplink", WARN if settling else FAIL,
                             f"not connected: {up.get('last_error') or '-'}",
                             "see the broker line above; credentials/TLS: `journalctl -u "
                             "edge-agent | grep uplink`"))
    ds = st.get("devices") or {}
    total, n_up, down = int(ds.get("total", 0)), int(ds.get("up", 0)), int(ds.get("down", 0))
    failing = [d for d in devices if d.get("failures")]
    names = ", ".join(str(d.get("name")) for d in failing[:6]) + (" ..." if len(failing) > 6
                                                                   else "")
    if total and not n_up and not settling:
        out.append(Check("devices", FAIL, f"none of {total} devices answers ({names or '-'})",
                         "`edge-agent devices`; the bus/endpoint lines above"))
    elif down:
        out.append(Check("devices", WARN, f"{n_up} of {total} up; not answering: {names}",
                         "`edge-agent devices`, then `edge-agent read DEVICE`"))
    else:
        out.append(Check("devices", PASS, f"{n_up} of {total} up"
                         + (f", {total - n_up} not polled yet" if total - n_up else "")))
    out.append(_outbox(st.get("outbox") or {}, cfg))
    return out  # the daemon's clock verdict: the clock line (doctor_unit.check_clock)


def _outbox(ob: dict[str, Any], cfg: AgentConfig | None) -> Check:
    from edge_agent.outbox.space import default_reserve

    mib = 2**20
    depth, age = ob.get("depth", 0), float(ob.get("oldest_age_s") or 0)
    if ob.get("commit_error"):
        since = ob.get("commit_failing_s")
        span = "" if since is None else f" for {since:.0f} s"
        return Check("outbox", FAIL, f"commits failing{span}: {ob['commit_error']}",
                     "free disk space; `journalctl -u edge-agent`")
    cap = ob.get("cap_bytes") or (cfg.outbox.cap_bytes if cfg else None)
    free = ob.get("disk_free_bytes")
    if isinstance(free, int) and free >= 0 and cap:  # -1: the daemon does not know yet
        reserve = (ob.get("reserve_bytes") or (cfg.outbox.reserve_bytes if cfg else None)
                   or default_reserve(int(cap)))
        if free < reserve and ob.get("reserve_held") is not True:  # held: still committing
            return Check("outbox", FAIL, f"{free / mib:.1f} MiB free on its disk, below the "
                         f"reserve of {reserve / mib:.1f} MiB, which is not held",
                         "free space now")
    dropped = int(ob.get("readings_dropped") or 0)
    detail = (f"{depth} batches waiting, oldest {age:.0f} s"
              + (f", {ob.get('footprint_bytes', 0) / mib:.1f} MiB on disk"
                 if ob.get("footprint_bytes") is not None else "")
              + (f"; {dropped} readings dropped (gap notices sent)" if dropped else ""))
    if age > 3600:
        return Check("outbox", WARN, detail, "the uplink has not taken them for over an hour")
    return Check("outbox", PASS, detail)
