"""A running scenario: every simulated device on its transport, faults on demand, a matching config.

``Scenario`` is used inside a running asyncio loop (``async with Scenario.load("street") as sc``);
TCP endpoints live in that loop, RTU lines and the AT modem run their own threads. Tests drive it
in-process (``sc.fault(...)``, ``await sc.endpoint_fault(...)``, ``sc.reboot(...)``); ``edge-sim``
drives it through the control socket (``simulators.control``); ``BackgroundScenario`` runs one on
its own thread for callers with their own loop. ``write_config(dir)`` writes an agent.toml pointing
at the simulated ports plus a throwaway Ed25519 signing key.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import os
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.errors import ConfigError, Problem
from edge_agent.profiles.load import load_profiles
from edge_agent.profiles.model import Profile

from .clock import SimClock
from .devices.catalog import make_device
from .devices.nbiot import NbiotState
from .devices.profile_device import ProfileDevice
from .faults import DeviceFault, EndpointFault
from .scenario_spec import DeviceSpec, EndpointSpec, LineSpec, ScenarioSpec, load_scenario
from .transports.tcp import TcpEndpoint

if TYPE_CHECKING:  # imported when started: a scenario without serial parts needs neither
    from .transports.at_modem import AtModem
    from .transports.rtu_line import RtuLine

log = logging.getLogger(__name__)
E = TypeVar("E", bound=enum.Enum)
T = TypeVar("T")


class Scenario:
    def __init__(self, spec: ScenarioSpec, *, seed: int | None = None,
                 speed: float | None = None, clock: SimClock | None = None) -> None:
        self.spec = spec
        self.seed = spec.seed if seed is None else seed
        self.clock = clock or SimClock(spec.speed if speed is None else speed,
                                       start_s=spec.start_hour * 3600.0)
        self.profiles = self._profiles(spec)
        self.devices: dict[str, ProfileDevice] = {}
        self.modems: dict[str, NbiotState] = {}
        self.endpoints: dict[str, TcpEndpoint] = {}
        self.line_devices: dict[str, list[ProfileDevice]] = {}
        self.lines: dict[str, RtuLine] = {}  # once started
        self.at_modems: dict[str, AtModem] = {}  # by serial bus name, once started
        self.paths: dict[str, str] = {}  # serial bus name -> pty path
        self.skipped: list[str] = []
        self._timers: list[asyncio.TimerHandle] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        for ep in spec.endpoints:
            self.endpoints[ep.name] = TcpEndpoint(ep.name, [self._device(d) for d in ep.devices])
        for line in spec.lines:
            self.line_devices[line.name] = [self._device(d) for d in line.devices]
        for m in spec.modems:
            self.modems[m.device] = NbiotState(name=m.device, seed=self.seed,
                                               t=self.clock.now())

    @classmethod
    def load(cls, name_or_path: str, **kwargs: Any) -> Scenario:
        return cls(load_scenario(name_or_path), **kwargs)

    @staticmethod
    def _profiles(spec: ScenarioSpec) -> dict[str, Profile]:
        profiles = load_profiles(spec.profiles_dir)
        groups: list[EndpointSpec | LineSpec] = [*spec.endpoints, *spec.lines]
        used = {d.profile for g in groups for d in g.devices}
        used |= {m.profile for m in spec.modems}
        missing = sorted(used - set(profiles))
        if missing:
            raise ConfigError([Problem(str(spec.source), "", f"unknown profile {p!r}",
                                       f"in {spec.profiles_dir}") for p in missing])
        return profiles

    def _device(self, d: DeviceSpec) -> ProfileDevice:
        params = self.spec.device_params(d)
        try:
            dev = make_device(d.name, d.unit_id, self.profiles[d.profile], self.clock,
                              seed=self.seed, params=params)
        except (TypeError, KeyError) as exc:
            raise ConfigError([Problem(str(self.spec.source), f"params.{d.name}",
                                       f"cannot build {d.name}: {exc}")]) from None
        self.devices[d.name] = dev
        return dev

    # --- life cycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for ep in self.endpoints.values():
            await ep.start()
        self._start_serial()
        log.info("sim_scenario_started scenario=%s seed=%d speed=%s devices=%d endpoints=%d "
                 "skipped=%d", self.spec.name, self.seed, self.clock.speed,
                 len(self.devices) + len(self.modems), len(self.endpoints), len(self.skipped))

    def _start_serial(self) -> None:
        try:
            from .transports.rtu_line import RtuLine
        except ImportError as exc:
            if self.line_devices:
                self.skipped.append(f"RTU lines {sorted(self.line_devices)}: {exc}")
        else:
            for spec in self.spec.lines:
                line = RtuLine(self.line_devices[spec.name], baud=spec.baud, parity=spec.parity,
                               stopbits=spec.stopbits, turnaround_s=spec.turnaround_ms / 1000.0)
                self.paths[spec.name] = line.start()
                self.lines[spec.name] = line
        try:
            from .transports.at_modem import AtModem
        except ImportError as exc:
            if self.modems:
                self.skipped.append(f"AT modems {sorted(self.modems)}: {exc}")
        else:
            for m in self.spec.modems:
                modem = AtModem(self.modems[m.device], clock=self.clock)
                self.paths[m.name] = modem.start()
                self.at_modems[m.name] = modem
        for why in self.skipped:
            log.warning("sim_skipped what=%s", why)

    async def stop(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for ep in self.endpoints.values():
            await ep.stop()
        for line in self.lines.values():
            line.stop()
        for modem in self.at_modems.values():
            modem.stop()
        self.lines.clear()
        self.at_modems.clear()
        log.info("sim_scenario_stopped scenario=%s", self.spec.name)

    async def __aenter__(self) -> Scenario:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- faults and actions ---------------------------------------------------------------------

    def _on_loop(self, action: Callable[[], Any]) -> None:
        """Run ``action`` on the scenario's loop (callers may be on another thread)."""
        loop = self._loop
        if loop is None:
            raise RuntimeError(f"scenario {self.spec.name} is not started")
        loop.call_soon_threadsafe(action)

    def _later(self, seconds: float | None, action: Callable[[], Any]) -> None:
        if seconds is not None:
            loop = self._loop
            assert loop is not None
            self._on_loop(lambda: self._timers.append(loop.call_later(seconds, action)))

    def fault(self, device: str, kind: DeviceFault | str, *, seconds: float | None = None,
              slow_s: float | None = None, exception_code: int | None = None) -> None:
        """Put ``device`` into fault ``kind`` (for ``seconds`` real seconds, if given)."""
        faults = self._faults_of(device)
        if seconds is not None:
            self._on_loop(lambda: None)  # fail before changing anything if not started
        faults.kind = _member(DeviceFault, kind)
        if slow_s is not None:
            faults.slow_s = slow_s
        if exception_code is not None:
            faults.exception_code = exception_code
        log.info("sim_fault device=%s fault=%s seconds=%s", device, faults.kind.value, seconds)
        self._later(seconds, faults.clear)

    def _faults_of(self, device: str) -> Any:
        if device in self.devices:
            return self.devices[device].faults
        if device in self.modems:
            return self.modems[device].faults
        raise KeyError(f"no device {device!r} in scenario {self.spec.name}")

    async def endpoint_fault(self, name: str, kind: EndpointFault | str, *,
                             seconds: float | None = None) -> None:
        ep = self.endpoints.get(name)
        if ep is None:
            raise KeyError(f"no TCP endpoint {name!r} in scenario {self.spec.name}")
        await ep.set_fault(_member(EndpointFault, kind))
        if seconds is not None:
            loop = asyncio.get_running_loop()
            self._later(seconds, lambda: self._keep(loop.create_task(
                ep.set_fault(EndpointFault.NONE))))

    def _keep(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def reboot(self, device: str) -> None:
        """Power-cycle ``device``: its volatile state resets, its TCP connections drop."""
        if device in self.modems:
            self.modems[device].reboot()
            return
        dev = self.devices.get(device)
        if dev is None:
            raise KeyError(f"no device {device!r} in scenario {self.spec.name}")
        dev.reboot()
        for ep in self.endpoints.values():
            if dev in ep.devices and len(ep.devices) == 1 and self._loop is not None:
                self._on_loop(ep.drop_connections)

    def event(self, device: str, name: str, seconds: float | None = None) -> None:
        """Force a behaviour event (door, tilt, tamper, hammer ...) on ``device``."""
        dev = self.devices.get(device)
        if dev is None:
            raise KeyError(f"no device {device!r} in scenario {self.spec.name}")
        dev.model.advance(self.clock.now())
        dev.model.trigger(name, seconds)

    def set_param(self, device: str, key: str, value: float) -> None:
        """Change a numeric model parameter at run time (e.g. a manhole's ``rain_mm_h``)."""
        dev = self.devices.get(device)
        if dev is None:
            raise KeyError(f"no device {device!r} in scenario {self.spec.name}")
        current = getattr(dev.model, key, None)
        if key.startswith("_") or isinstance(current, bool) or not isinstance(current, int | float):
            raise KeyError(f"{device} has no numeric parameter {key!r}")
        dev.model.advance(self.clock.now())  # the old value holds up to now
        setattr(dev.model, key, float(value))
        log.info("sim_param device=%s %s=%s", device, key, value)

    def status(self) -> dict[str, Any]:
        return {
            "scenario": self.spec.name, "seed": self.seed, "speed": self.clock.speed,
            "sim_time_s": round(self.clock.now(), 1),
            "endpoints": {n: {"port": e.port, "fault": e.fault.value,
                              "units": [d.name for d in e.devices]}
                          for n, e in self.endpoints.items()},
            "serial": dict(self.paths),
            "faults": {n: f.kind.value for n, f in (
                *((n, d.faults) for n, d in self.devices.items()),
                *((n, m.faults) for n, m in self.modems.items()))
                if f.kind is not DeviceFault.NONE},
            "skipped": list(self.skipped),
        }

    # --- the matching agent config --------------------------------------------------------------

    def write_config(self, directory: Path, *, mqtt_port: int | None = None,
                     gateway_id: str | None = None) -> Path:
        """Write ``agent.toml`` and ``signing.key`` (Ed25519, PKCS8 PEM, mode 0600) in ``directory``
        for the started scenario. ``mqtt_port`` adds a plain-TCP ``[uplink]`` on 127.0.0.1."""
        directory.mkdir(parents=True, exist_ok=True)
        key_path = directory / "signing.key"
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption())
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        os.chmod(key_path, 0o600)
        out = [f'gateway_id = {_q(gateway_id or "sim-" + self.spec.name)}',
               f'profiles_dir = {_q(self.spec.profiles_dir)}',
               f'state_dir = {_q(directory / "state")}',
               f'runtime_dir = {_q(directory / "run")}', ""]
        devices: list[str] = []
        for name, ep in self.endpoints.items():
            out += ["[[buses]]", f'name = {_q(name)}', 'kind = "tcp"', 'host = "127.0.0.1"',
                    f"port = {ep.port}", ""]
            devices += [_device_entry(d.name, d.profile.name, name, d.unit_id) for d in ep.devices]
        for spec in self.spec.lines:
            if spec.name not in self.paths:
                continue
            out += ["[[buses]]", f'name = {_q(spec.name)}', 'kind = "rtu"',
                    f'port = {_q(self.paths[spec.name])}', f"baud = {spec.baud}",
                    f'parity = {_q(spec.parity)}', f"stopbits = {spec.stopbits}",
                    f"turnaround_ms = {spec.turnaround_ms}", ""]
            devices += [_device_entry(d.name, d.profile.name, spec.name, d.unit_id)
                        for d in self.line_devices[spec.name]]
        for m in self.spec.modems:
            if m.name not in self.paths:
                continue
            out += ["[[buses]]", f'name = {_q(m.name)}', 'kind = "at"',
                    f'port = {_q(self.paths[m.name])}', "baud = 9600", ""]
            devices.append(_device_entry(m.device, m.profile, m.name, None))
        out += devices
        if mqtt_port is not None:
            out += ["[uplink]", 'host = "127.0.0.1"', f"port = {mqtt_port}", ""]
        out += ["[keys]", f'signing_key = {_q(key_path)}', ""]
        path = directory / "agent.toml"
        path.write_text("\n".join(out))
        log.info("sim_config_written path=%s devices=%d", path, len(devices))
        return path


class BackgroundScenario:
    """A Scenario on its own event loop thread, for callers that run their own loop (the agent in
    an integration test). ``with BackgroundScenario.load("street") as sc:`` then ``sc.call(...)``
    runs a coroutine function on the scenario's loop and returns its result."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever,
                                        name=f"sim-{scenario.spec.name}", daemon=True)

    @classmethod
    def load(cls, name_or_path: str, **kwargs: Any) -> BackgroundScenario:
        return cls(Scenario.load(name_or_path, **kwargs))

    def call(self, fn: Callable[[], Coroutine[Any, Any, T]], timeout_s: float = 10.0) -> T:
        return asyncio.run_coroutine_threadsafe(fn(), self._loop).result(timeout_s)

    def start(self) -> Scenario:
        self._thread.start()
        self.call(self.scenario.start)
        return self.scenario

    def stop(self) -> None:
        if self._thread.is_alive():
            try:
                self.call(self.scenario.stop)
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(5.0)
        if not self._loop.is_closed():
            self._loop.close()

    def __enter__(self) -> Scenario:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _member(kind: type[E], value: str) -> E:
    try:
        return kind(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a {kind.__name__} "
                         f"({', '.join(str(m.value) for m in kind)})") from None


def _q(value: object) -> str:
    """A TOML basic string (JSON's escaping is a subset of TOML's)."""
    return json.dumps(str(value))


def _device_entry(name: str, profile: str, bus: str, unit_id: int | None) -> str:
    unit = "" if unit_id is None else f"unit_id = {unit_id}\n"
    return f"[[devices]]\nname = {_q(name)}\nprofile = {_q(profile)}\nbus = {_q(bus)}\n{unit}"

