"""Cross-checks of agent.toml that need more than one section: buses, devices and profiles.

Run by ``config.load.load_config`` after every section has been parsed; each problem names the key
path of the entry at fault (``devices[2].unit_id``). Checks that need only one profile live in
``profiles.load``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from edge_agent.config.model import Bus, BusKind, DeviceConfig, SerialBus
from edge_agent.profiles.fields import Problems, did_you_mean
from edge_agent.profiles.model import Profile, Protocol
from edge_agent.profiles.planner import ReadRequest, plan, rtu_frame_bytes


@dataclass(frozen=True, slots=True)
class BusEntry:
    path: str  # "buses[1]"
    bus: Bus


@dataclass(frozen=True, slots=True)
class DeviceEntry:
    path: str  # "devices[3]"
    config: DeviceConfig
    keys: frozenset[str]  # the keys written in the file (to tell a default from a given value)


def effective_max_gap(device: DeviceConfig, profile: Profile) -> int:
    return profile.max_gap if device.max_gap is None else device.max_gap


def device_plan(device: DeviceConfig, profile: Profile) -> list[ReadRequest]:
    """The read requests the poller will start with for this device (empty for AT devices)."""
    return plan(profile.modbus_points, max_gap=effective_max_gap(device, profile))


def rtu_exchange_s(bus: SerialBus, request: ReadRequest) -> float:
    """Wire time of one RTU read: request + response frames and two silent intervals."""
    req, resp = rtu_frame_bytes(request.table, request.count)
    return (req + resp) * bus.char_time_s + 2 * bus.silent_interval_s


def cross_check(buses: Sequence[BusEntry], devices: Sequence[DeviceEntry],
                profiles: Mapping[str, Profile], problems: Problems, *,
                broken_profiles: Collection[str] = (),
                broken_buses: Collection[str] = ()) -> dict[str, Bus]:
    """Add every cross-section problem to ``problems``; return the buses by name. References
    to ``broken_*`` names (whose own problems are already reported) are not flagged again."""
    bus_map = _check_buses(buses, problems)
    bus_paths = {e.bus.name: e.path for e in reversed(buses)}
    names: dict[str, str] = {}
    units: dict[tuple[str, int], DeviceEntry] = {}
    at_users: dict[str, DeviceEntry] = {}
    for entry in devices:
        dev = entry.config
        if dev.name in names:
            problems.add(f"{entry.path}.name",
                         f"duplicate device name {dev.name!r} (also {names[dev.name]})")
        else:
            names[dev.name] = entry.path
        bus = bus_map.get(dev.bus)
        if bus is None and dev.bus not in broken_buses:
            problems.add(f"{entry.path}.bus", f"unknown bus {dev.bus!r}",
                         did_you_mean(dev.bus, [*bus_map, *broken_buses]))
        profile = profiles.get(dev.profile)
        if profile is None and dev.profile not in broken_profiles:
            problems.add(f"{entry.path}.profile", f"unknown profile {dev.profile!r}",
                         did_you_mean(dev.profile, [*profiles, *broken_profiles]))
        if profile is not None:
            _check_device_profile(entry, profile, problems)
        if bus is not None and profile is not None and not _check_kind(
                entry, bus, profile, bus_paths[bus.name], problems):
            continue  # on the wrong kind of bus: unit ids there mean nothing
        if bus is not None:
            _check_unit(entry, bus, units, at_users, problems)
    return bus_map


def _check_buses(buses: Sequence[BusEntry], problems: Problems) -> dict[str, Bus]:
    bus_map: dict[str, Bus] = {}
    paths: dict[str, str] = {}
    ports: dict[str, str] = {}
    for e in buses:
        if e.bus.name in bus_map:
            problems.add(f"{e.path}.name",
                         f"duplicate bus name {e.bus.name!r} (also {paths[e.bus.name]})")
            continue
        bus_map[e.bus.name] = e.bus
        paths[e.bus.name] = e.path
        if isinstance(e.bus, SerialBus):
            if e.bus.port in ports:
                problems.add(f"{e.path}.port", f"serial port {e.bus.port!r} is already used "
                             f"by {ports[e.bus.port]}; one bus owns a line")
            else:
                ports[e.bus.port] = e.path
    return bus_map


def _check_unit(entry: DeviceEntry, bus: Bus, units: dict[tuple[str, int], DeviceEntry],
                at_users: dict[str, DeviceEntry], problems: Problems) -> None:
    dev = entry.config
    if bus.kind is BusKind.AT:
        if "unit_id" in entry.keys:
            problems.add(f"{entry.path}.unit_id",
                         f"unit_id does not apply to a device on at bus {bus.name!r}")
        other = at_users.setdefault(bus.name, entry)
        if other is not entry:
            problems.add(f"{entry.path}.bus", f"at bus {bus.name!r} carries one module and is "
                         f"already used by {other.config.name!r} ({other.path})")
        return
    lowest = 0 if bus.kind is BusKind.TCP else 1
    if not lowest <= dev.unit_id <= 247:
        why = ("1..247 on RTU (0 is broadcast)" if bus.kind is BusKind.RTU
               else "0..247 on TCP")
        problems.add(f"{entry.path}.unit_id", f"unit id {dev.unit_id} is out of range: {why}")
        return
    other = units.setdefault((bus.name, dev.unit_id), entry)
    if other is not entry:
        problems.add(f"{entry.path}.unit_id", f"unit id {dev.unit_id} on bus {bus.name!r} is "
                     f"already used by {other.config.name!r} ({other.path})")


def _check_kind(entry: DeviceEntry, bus: Bus, profile: Profile, bus_path: str,
                problems: Problems) -> bool:
    """False if the device sits on the wrong kind of bus."""
    dev = entry.config
    want = (BusKind.AT,) if profile.protocol is Protocol.AT else (BusKind.TCP, BusKind.RTU)
    if bus.kind not in want:
        need = " or ".join(k.value for k in want)
        problems.add(f"{entry.path}.bus", f"profile {profile.name!r} speaks "
                     f"{profile.protocol.value} but bus {bus.name!r} is kind {bus.kind.value} "
                     f"(needs a {need} bus)")
        return False
    if isinstance(bus, SerialBus) and bus.kind is BusKind.RTU:
        requests = device_plan(dev, profile)
        if requests:
            longest = max(requests, key=lambda r: rtu_exchange_s(bus, r))
            need_s = rtu_exchange_s(bus, longest)
            if need_s > bus.timeout_max_s:
                problems.add(f"{bus_path}.timeout_max", f"timeout_max {bus.timeout_max_s} s is "
                             f"shorter than the longest planned read of {dev.name!r} "
                             f"({longest.count} x {longest.table.value}: {need_s:.3f} s at "
                             f"{bus.baud} baud)")
    return True


def _check_device_profile(entry: DeviceEntry, profile: Profile, problems: Problems) -> None:
    dev = entry.config
    if dev.max_gap is not None:
        if profile.protocol is Protocol.AT:
            problems.add(f"{entry.path}.max_gap", "max_gap does not apply to an at profile")
        elif profile.max_gap == 0 and dev.max_gap > 0:
            problems.add(f"{entry.path}.max_gap", f"profile {profile.name!r} has max_gap = 0 "
                         "(the device rejects reads of unmapped registers); a device cannot "
                         "widen it")
    if dev.interval_s is not None:
        short = [p.name for p in profile.points if p.reporting.heartbeat_s is not None
                 and p.reporting.heartbeat_s < dev.interval_s]
        if short:
            problems.add(f"{entry.path}.interval", f"interval {dev.interval_s} s is longer than "
                         f"the heartbeat of {', '.join(short)} in profile {profile.name!r}")
