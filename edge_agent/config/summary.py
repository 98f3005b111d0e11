"""What ``edge-agent check-config`` prints for a valid config: buses, devices per bus, points, the
read requests the planner will start with, and an estimate of each RTU line's load.

The line load is the wire time of every planned read (request + response frames + silent
intervals) divided by how often it runs (the shortest interval among its points), summed over the
line's devices: above 100 % the line cannot keep up with the configured intervals.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from edge_agent.config.checks import device_plan, effective_max_gap, rtu_exchange_s
from edge_agent.config.model import AgentConfig, Bus, DeviceConfig, SerialBus, TcpBus
from edge_agent.profiles.model import Profile, Protocol
from edge_agent.profiles.planner import ReadRequest

WIDTH = 100  # columns of the text summary


@dataclass
class RequestInfo:
    table: str
    address: int
    count: int
    points: list[str]


@dataclass
class DeviceInfo:
    name: str
    profile: str
    unit_id: int | None
    points: int
    max_gap: int | None
    requests: list[RequestInfo] = field(default_factory=list)
    at_commands: list[str] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class BusInfo:
    name: str
    kind: str
    endpoint: str
    devices: list[DeviceInfo]
    line_load: float | None  # RTU only: fraction of line time the planned polling needs


@dataclass
class ProfileInfo:
    name: str
    vendor: str
    model: str
    component_class: str
    protocol: str
    points: int
    requests: list[RequestInfo]


@dataclass
class Summary:
    gateway_id: str
    source: str
    profiles: list[str]
    uplink: str
    outbox: str
    batch: str
    buses: list[BusInfo]
    warnings: list[str] = field(default_factory=list)  # accepted but unsafe settings

    @property
    def devices(self) -> int:
        return sum(len(b.devices) for b in self.buses)

    @property
    def points(self) -> int:
        return sum(d.points for b in self.buses for d in b.devices)

    @property
    def requests(self) -> int:
        return sum(len(d.requests) for b in self.buses for d in b.devices)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["totals"] = {"buses": len(self.buses), "devices": self.devices,
                         "points": self.points, "read_requests": self.requests}
        return out


def summarize(cfg: AgentConfig) -> Summary:
    buses = []
    for bus in cfg.buses.values():
        devices = [d for d in cfg.devices if d.bus == bus.name]
        infos = [_device(d, cfg.profiles[d.profile]) for d in devices]
        load = None
        if isinstance(bus, SerialBus) and bus.kind.value == "rtu":
            load = sum(_load(bus, d, cfg.profiles[d.profile]) for d in devices)
        buses.append(BusInfo(bus.name, bus.kind.value, _endpoint(bus), infos, load))
    up = cfg.uplink
    uplink = "none (readings stay in the outbox)"
    if up is not None:
        scheme = "mqtts" if up.tls else "mqtt"
        uplink = (f"{scheme}://{up.host}:{up.port} MQTT {up.protocol} topic "
                  f"{up.topic_prefix}/{cfg.gateway_id}/...")
        if up.plaintext_remote:
            uplink += " -- PLAINTEXT (insecure_plaintext = true)"
    return Summary(
        gateway_id=cfg.gateway_id, source=str(cfg.source), profiles=sorted(cfg.profiles),
        uplink=uplink, outbox=f"{cfg.outbox.path} cap {_size(cfg.outbox.cap_bytes)}",
        batch=f"<= {cfg.batch.max_readings} readings / {cfg.batch.max_ms} ms", buses=buses,
        warnings=[str(w) for w in cfg.warnings])


def profile_info(profile: Profile) -> ProfileInfo:
    dev = DeviceConfig(name=profile.name, profile=profile.name, bus="")
    reqs = [_request(r) for r in device_plan(dev, profile)]
    return ProfileInfo(profile.name, profile.vendor, profile.model, profile.component_class,
                       profile.protocol.value, len(profile.points), reqs)


def render(s: Summary) -> str:
    lines = [f"config ok: gateway {s.gateway_id} ({s.source})",
             *(f"WARNING:  {w}" for w in s.warnings),
             *_pack(f"profiles: {len(s.profiles)} loaded: ", s.profiles, " "),
             f"uplink:   {s.uplink}",
             f"outbox:   {s.outbox}; batch {s.batch}", ""]
    devices = [d for b in s.buses for d in b.devices]
    w_name = max((len(d.name) for d in devices), default=0)
    w_prof = max((len(d.profile) for d in devices), default=0)
    for b in s.buses:
        load = "" if b.line_load is None else f", est. line load {100 * b.line_load:.1f} %"
        lines.append(f"bus {b.name} [{b.kind}] {b.endpoint}: {len(b.devices)} device(s){load}")
        for d in b.devices:
            unit = "" if d.unit_id is None else f"unit {d.unit_id}"
            head = f"  {d.name:<{w_name}}  {d.profile:<{w_prof}}  {unit:<8}{d.points:>3} pts  "
            if d.at_commands:
                lines += _pack(head, d.at_commands, " ")
            else:
                lines += _pack(head, [f"{r.table} {r.address}+{r.count}" for r in d.requests],
                               ", ")
    lines += ["", f"total: {len(s.buses)} buses, {s.devices} devices, {s.points} points, "
                  f"{s.requests} read requests per full poll"]
    return "\n".join(lines)


def _pack(head: str, items: list[str], sep: str) -> list[str]:
    """``head`` + items joined by ``sep``, continued on indented lines to stay within WIDTH."""
    lines = [head]
    for i, item in enumerate(items):
        last = i == len(items) - 1
        piece = item if last else item + sep.rstrip()
        if len(lines[-1]) + len(piece) > WIDTH and lines[-1].strip() and lines[-1] != head:
            lines.append(" " * len(head))
        lines[-1] += piece + ("" if last else " ")
    return [line.rstrip() for line in lines]


def render_profile(p: ProfileInfo) -> str:
    head = f"profile ok: {p.name} ({p.vendor} {p.model}, {p.component_class}, {p.protocol}), " \
           f"{p.points} points"
    reads = [f"  {r.table} {r.address}+{r.count}: {', '.join(r.points)}" for r in p.requests]
    return "\n".join([head, *( [f"{len(reads)} planned read(s):", *reads] if reads else [])])


def _device(d: DeviceConfig, profile: Profile) -> DeviceInfo:
    info = DeviceInfo(d.name, d.profile, None, len(profile.points), None, tags=dict(d.tags))
    if profile.protocol is Protocol.AT:
        info.at_commands = sorted({p.command for p in profile.at_points})
    else:
        info.unit_id = d.unit_id
        info.max_gap = effective_max_gap(d, profile)
        info.requests = [_request(r) for r in device_plan(d, profile)]
    return info


def _request(r: ReadRequest) -> RequestInfo:
    return RequestInfo(r.table.value, r.address, r.count, [p.name for p in r.points])


def _load(bus: SerialBus, d: DeviceConfig, profile: Profile) -> float:
    total = 0.0
    for r in device_plan(d, profile):
        every = d.interval_s or min(p.reporting.interval_s for p in r.points)
        total += rtu_exchange_s(bus, r) / every
    return total


def _endpoint(bus: Bus) -> str:
    if isinstance(bus, TcpBus):
        return f"{bus.host}:{bus.port}"
    return f"{bus.port} {bus.baud} {bus.bytesize}{bus.parity}{bus.stopbits}"


def _size(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} B"
