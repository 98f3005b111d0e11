"""Scenarios end to end: loading (with located errors), the generated agent config, the control
socket, and the `edge-sim` CLI in a real subprocess."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from pymodbus.client import AsyncModbusTcpClient

from edge_agent.config.load import load_config
from edge_agent.config.model import SerialBus, TcpBus
from edge_agent.errors import ConfigError
from edge_agent.profiles.model import Table
from simulators import cli, control
from simulators.clock import SimClock
from simulators.faults import DeviceFault, EndpointFault
from simulators.scenario import Scenario
from simulators.scenario_spec import load_scenario


def test_shipped_scenarios_have_the_promised_shape() -> None:
    street = load_scenario("street")
    assert len(street.endpoints) == 22  # 20 poles + 2 pressure transmitters
    assert [len(e.devices) for e in street.endpoints[:20]] == [2] * 20
    assert {li.name: len(li.devices) for li in street.lines} == {"rs485-water": 8,
                                                                 "rs485-manhole": 4}
    assert street.lines[0].baud == 9600 and street.lines[0].parity == "N"
    assert [m.device for m in street.modems] == ["nbiot-1"]
    district = load_scenario("district")
    assert district.device_count == 1000
    assert all(d.unit_id in (1, 2) for e in district.endpoints for d in e.devices)


def test_scenario_errors_name_file_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('seed = "x"\n[[tcp]]\nname = "p"\ncount = 2\n'
                   'units = [{ name = "lamp", profile = "street_lamp", unitid = 1 }]\n'
                   '[params]\nghost = { rain_mm_h = 1.0 }\n')
    with pytest.raises(ConfigError) as exc:
        load_scenario(str(bad))
    text = str(exc.value)
    assert f"{bad}: seed: expected an integer" in text
    assert "tcp[0].units[0].unitid: unknown key 'unitid'" in text
    assert "did you mean 'unit_id'" in text
    assert "params.ghost: no device or unit named 'ghost'" in text
    with pytest.raises(ConfigError, match="no such scenario"):
        load_scenario("nowhere")


def test_unknown_model_parameter_is_reported(tmp_path: Path) -> None:
    bad = tmp_path / "p.toml"
    bad.write_text('[[tcp]]\nname = "p"\nunits = [{ name = "lamp", profile = "street_lamp" }]\n'
                   '[params]\nlamp = { rain_mm_h = 3.0 }\n')
    with pytest.raises(ConfigError, match=r"params.lamp-01: cannot build lamp-01"):
        Scenario.load(str(bad))


@pytest.mark.timeout(30)
def test_street_runs_and_writes_a_valid_agent_config(tmp_path: Path) -> None:
    async def main() -> None:
        async with Scenario.load("street", clock=SimClock(0, start_s=20 * 3600)) as sc:
            path = sc.write_config(tmp_path, mqtt_port=1883)
            cfg = load_config(path)
            assert len(cfg.devices) == 55 - (0 if sc.paths else 13)
            key = cfg.keys.signing_key
            assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
            assert isinstance(load_pem_private_key(key.read_bytes(), None), Ed25519PrivateKey)
            bus = cfg.buses["pole-07"]
            assert isinstance(bus, TcpBus) and bus.port == sc.endpoints["pole-07"].port
            water = cfg.buses.get("rs485-water")
            if water is not None:  # the RTU line exists
                assert isinstance(water, SerialBus) and Path(water.port).exists()
                assert water.baud == 9600
            # the config points at the device that answers
            client = AsyncModbusTcpClient("127.0.0.1", port=bus.port, timeout=1, retries=0)
            assert await client.connect()
            rr = await client.read_input_registers(0, count=3, device_id=1)
            client.close()
            assert rr.registers == sc.devices["lamp-07"].read(Table.INPUT, 0, 3)
            assert rr.registers[2] > 0  # 20:00: the lamps are on
            # a timed endpoint fault heals itself on the same port
            port2 = sc.endpoints["pole-02"].port
            await sc.endpoint_fault("pole-02", "refuse", seconds=0.2)
            with pytest.raises(ConnectionRefusedError):
                await asyncio.open_connection("127.0.0.1", port2)
            await asyncio.sleep(0.5)
            _, writer = await asyncio.open_connection("127.0.0.1", port2)
            writer.close()
            # rebooting a device with its own server drops its connections
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", sc.endpoints["pressure-02"].port)
            await asyncio.sleep(0.05)
            sc.reboot("pressure-02")
            with pytest.raises(ConnectionResetError):
                await asyncio.wait_for(reader.read(10), 2)
            writer.close()

    asyncio.run(main())


@pytest.mark.timeout(30)
def test_same_seed_gives_the_same_street(tmp_path: Path) -> None:
    def image(seed: int) -> list[list[int]]:
        sc = Scenario.load("street", seed=seed, clock=SimClock(0, start_s=8 * 3600))
        sc.clock.advance(3 * 3600)
        return [sc.devices[n].read(Table.INPUT, 0, 7) for n in ("meter-01", "meter-05")] + [
            sc.devices["env-03"].read(Table.HOLDING, 0, 9)]

    assert image(11) == image(11)
    assert image(11) != image(12)


@pytest.mark.timeout(30)
def test_control_socket_drives_faults(tmp_path: Path) -> None:
    async def main() -> None:
        sc = Scenario.load("street", clock=SimClock(0, start_s=20 * 3600))
        server = control.ControlServer(sc, tmp_path)
        async with sc:
            await server.start()
            assert stat.S_IMODE(os.stat(server.path).st_mode) == 0o600
            try:
                ask = asyncio.to_thread
                assert await ask(control.send, tmp_path, {"op": "fault", "device": "lamp-02",
                                                          "kind": "dead", "seconds": 0.3})
                assert sc.devices["lamp-02"].faults.kind is DeviceFault.DEAD
                answer = await ask(control.send, tmp_path, {"op": "fault", "endpoint": "pole-03",
                                                            "kind": "stall"})
                assert answer == {"ok": True}
                assert sc.endpoints["pole-03"].fault is EndpointFault.STALL
                bad = await ask(control.send, tmp_path, {"op": "fault", "device": "lamp-02",
                                                         "kind": "melted"})
                assert bad["ok"] is False and "'melted' is not a DeviceFault" in bad["error"]
                bad = await ask(control.send, tmp_path, {"op": "reboot", "device": "nope"})
                assert bad == {"ok": False, "error": "no device 'nope' in scenario street"}
                status = await ask(control.send, tmp_path, {"op": "status"})
                assert status["faults"] == {"lamp-02": "dead"}
                await asyncio.sleep(0.5)  # the timed fault clears itself
                assert sc.status()["faults"] == {}
            finally:
                await server.stop()
        assert not server.path.exists()

    asyncio.run(main())


@pytest.mark.timeout(40)
def test_edge_sim_cli_run_fault_reboot(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulators.cli", "run", "street", "--run-dir", str(run_dir),
         "--write-config", str(tmp_path / "cfg"), "--duration", "30", "--speed", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 15
        while not (run_dir / control.SOCKET_NAME).exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        args = ["--run-dir", str(run_dir)]
        assert cli.main(["fault", "meter-02", "slow", "--slow-s", "0.2", *args]) == 0
        assert cli.main(["fault", "--endpoint", "pole-01", "refuse", *args]) == 0
        assert cli.main(["reboot", "lamp-04", *args]) == 0
        assert cli.main(["event", "lamp-04", "door", *args]) == 0
        assert cli.main(["set", "manhole-02", "rain_mm_h", "20", *args]) == 0
        assert cli.main(["set", "manhole-02", "sunshine", "1", *args]) == 1
        assert cli.main(["fault", "lamp-99", "dead", *args]) == 1
        assert cli.main(["fault", "--endpoint", "pole-01", "refuse", "x", *args]) == 2
        status = control.send(run_dir, {"op": "status"})
        assert status["faults"] == {"meter-02": "slow"}
        assert status["endpoints"]["pole-01"]["fault"] == "refuse"
        assert status["speed"] == 60.0
        assert load_config(tmp_path / "cfg" / "agent.toml").gateway_id == "sim-street"
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "tcp pole-01" in out and "control:" in out


def test_edge_sim_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "district" in out and "1000 devices" in out and "street" in out


@pytest.mark.timeout(30)
def test_background_scenario_serves_a_synchronous_client() -> None:
    from pymodbus.client import ModbusTcpClient

    from simulators.scenario import BackgroundScenario

    with BackgroundScenario.load("street", clock=SimClock(0, start_s=20 * 3600)) as sc:
        port = sc.endpoints["pressure-01"].port
        with ModbusTcpClient("127.0.0.1", port=port, timeout=1, retries=0) as client:
            rr = client.read_input_registers(0, count=2, device_id=1)
            assert rr.registers == sc.devices["pressure-01"].read(Table.INPUT, 0, 2)
            sc.fault("pressure-01", "exception", exception_code=2)
            rr = client.read_input_registers(0, count=2, device_id=1)
            assert rr.isError() and rr.exception_code == 2


def test_storm_raises_the_water_in_the_manholes() -> None:
    sc = Scenario.load("street", clock=SimClock(0, start_s=12 * 3600))
    before = [sc.devices[f"manhole-0{i}"].snapshot()["water_level"] for i in (1, 2)]
    sc.set_param("manhole-02", "rain_mm_h", 25)
    sc.clock.advance(3600)
    after = [sc.devices[f"manhole-0{i}"].snapshot()["water_level"] for i in (1, 2)]
    assert isinstance(after[1], float) and isinstance(before[1], float)
    assert after[1] > before[1] + 30
    assert after[0] == pytest.approx(before[0], abs=5)
    with pytest.raises(KeyError, match="no numeric parameter"):
        sc.set_param("manhole-02", "values", 1)
