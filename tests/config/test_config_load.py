"""agent.toml parsing: the shipped example, defaults, paths, sizes, and per-section key errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edge_agent.config.load import load_config, parse_size
from edge_agent.config.model import BusKind, SerialBus, TcpBus
from edge_agent.errors import Problem
from edge_agent.profiles.load import load_profiles
from tests.config.conftest import EXAMPLE, PROFILES, Doc, Writer, paths, problems


def fails(write: Writer, doc: Doc) -> list[Problem]:
    path = write("etc/agent.toml", doc)
    return problems(lambda: load_config(path))


def test_example_loads_and_uses_every_section() -> None:
    cfg = load_config(EXAMPLE)
    assert cfg.gateway_id == "gw-harbour-st-07"
    assert cfg.source == EXAMPLE
    assert {b.kind for b in cfg.buses.values()} == set(BusKind)
    assert {d.profile for d in cfg.devices} == set(load_profiles(PROFILES))
    assert cfg.uplink is not None and cfg.uplink.tls is not None
    assert cfg.uplink.protocol == "5" and cfg.uplink.tls.ca_file.is_file()
    assert cfg.outbox.cap_bytes == 256 * 1024 * 1024
    assert cfg.keys.command_keys is not None
    assert cfg.commands_allow_unsynced_clock is False
    lamp = next(d for d in cfg.devices if d.name == "lamp-p07")
    assert lamp.tags == {"location": "Harbour St 7", "pole": "P07"}
    # every top-level key of the config format appears in the example
    import tomllib

    from edge_agent.config.load import TOP_KEYS
    assert set(tomllib.loads(EXAMPLE.read_text("utf-8"))) == set(TOP_KEYS)


def test_devices_share_one_string_per_profile_bus_and_host() -> None:
    """Memory (issue #15): a thousand devices name a few profiles and buses; tomllib makes a
    new string for every occurrence, the loader keeps one (interned)."""
    import sys

    cfg = load_config(EXAMPLE)
    assert len(cfg.devices) > len({d.profile for d in cfg.devices})  # profiles are shared
    for d in cfg.devices:
        assert d.profile is sys.intern(d.profile) and d.bus is sys.intern(d.bus), d.name
    hosts = [b.host for b in cfg.buses.values() if isinstance(b, TcpBus)]
    assert hosts and all(h is sys.intern(h) for h in hosts)
    # a Modbus TCP bus and the devices on it hold one string for its name
    tcp = [d for d in cfg.devices if isinstance(cfg.buses[d.bus], TcpBus)]
    assert tcp and all(d.bus is cfg.buses[d.bus].name for d in tcp)


def test_devices_without_tags_share_one_read_only_mapping(write: Writer, config: Doc) -> None:
    """Memory (issue #15): not an empty dict per device; tags that are given stay as given."""
    from edge_agent.config.model import NO_TAGS, DeviceConfig

    cfg = load_config(write("agent.toml", config))
    assert {d.name: dict(d.tags) for d in cfg.devices} == {
        "lamp1": {"pole": "P1"}, "lamp2": {}, "press": {}, "nb": {}}
    assert [d.name for d in cfg.devices if d.tags is NO_TAGS] == ["lamp2", "press", "nb"]
    assert DeviceConfig("x", "p", "b").tags is NO_TAGS
    with pytest.raises(TypeError):
        NO_TAGS["k"] = "v"  # type: ignore[index]
    assert NO_TAGS == {} and len(NO_TAGS) == 0


def test_devices_of_one_interval_share_its_float(write: Writer, config: Doc) -> None:
    """Memory (issue #15): a thousand devices at ``interval = 60`` hold one float, not one
    each; every device keeps its own value, a float as given."""
    devs = config["devices"]
    for d, v in zip(devs, (60, 60.0, 2.5, None), strict=True):
        if v is not None:
            d["interval"] = v
    cfg = load_config(write("agent.toml", config))
    got = {d.name: d.interval_s for d in cfg.devices}
    assert got == {"lamp1": 60.0, "lamp2": 60.0, "press": 2.5, "nb": None}
    assert all(type(v) is float for v in got.values() if v is not None)
    assert cfg.devices[0].interval_s is cfg.devices[1].interval_s


def test_minimal_config_defaults_and_relative_paths(write: Writer, config: Doc,
                                                    tmp_path: Path) -> None:
    del config["state_dir"], config["runtime_dir"]
    config["profiles_dir"] = "../profiles"
    for name in ("street_lamp", "pipe_pressure", "nbiot_bc95"):
        dest = tmp_path / "profiles" / f"{name}.toml"
        dest.parent.mkdir(exist_ok=True)
        dest.write_bytes((PROFILES / f"{name}.toml").read_bytes())
    cfg = load_config(write("etc/agent.toml", config))
    assert set(cfg.profiles) == {"street_lamp", "pipe_pressure", "nbiot_bc95"}
    assert cfg.keys.signing_key == tmp_path / "etc" / "keys" / "signing.key"
    assert cfg.state_dir == Path("/var/lib/edge-agent")
    assert cfg.outbox.path == Path("/var/lib/edge-agent/outbox.sqlite")
    assert cfg.uplink is None
    assert (cfg.batch.max_readings, cfg.batch.max_ms) == (1000, 1000)
    rtu = cfg.buses["line1"]
    assert isinstance(rtu, SerialBus) and (rtu.baud, rtu.parity, rtu.stopbits) == (9600, "N", 1)
    tcp = cfg.buses["plc"]
    assert isinstance(tcp, TcpBus) and (tcp.port, tcp.concurrency) == (1502, 2)
    assert cfg.devices[2].unit_id == 0
    assert cfg.commands_allow_unsynced_clock is False
    config["commands"] = {"allow_unsynced_clock": True}
    assert load_config(write("etc/agent.toml", config)).commands_allow_unsynced_clock is True


def test_profiles_argument_replaces_profiles_dir(write: Writer, config: Doc) -> None:
    config["profiles_dir"] = "does-not-exist"
    cfg = load_config(write("a.toml", config), profiles=load_profiles(PROFILES))
    assert "street_lamp" in cfg.profiles


@pytest.mark.parametrize(("text", "size"), [("256MiB", 256 << 20), ("1GiB", 1 << 30),
                                            ("2 GB", 2 * 10**9), ("1.5MiB", 3 << 19),
                                            ("12", None), ("5 parsecs", None)])
def test_parse_size(text: str, size: int | None) -> None:
    assert parse_size(text) == size


def test_uplink_port_defaults_follow_tls(write: Writer, config: Doc, tmp_path: Path) -> None:
    config["uplink"] = {"host": "broker", "insecure_plaintext": True}
    cfg = load_config(write("a.toml", config))
    assert cfg.uplink is not None and cfg.uplink.port == 1883 and cfg.uplink.tls is None
    del config["uplink"]["insecure_plaintext"]
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    config["uplink"]["tls"] = {"ca_file": "ca.pem"}
    cfg = load_config(write("a.toml", config))
    assert cfg.uplink is not None and cfg.uplink.port == 8883
    assert cfg.uplink.tls is not None and cfg.uplink.tls.ca_file == ca


def _set(section: str, index: int | None, **kv: Any) -> Any:
    def mutate(doc: Doc) -> None:
        target = doc[section] if index is None else doc[section][index]
        target.update(kv)
    return mutate


def _top(**kv: Any) -> Any:
    def mutate(doc: Doc) -> None:
        doc.update(kv)
    return mutate


def _drop(key: str) -> Any:
    def mutate(doc: Doc) -> None:
        del doc[key]
    return mutate


SECTION_CASES = [
    (_top(gateway="x"), "gateway", "unknown key", "did you mean 'gateway_id'?"),
    (_top(gateway_id="gw/1"), "gateway_id", "not a valid name", ""),
    (_drop("gateway_id"), "gateway_id", "required key missing", ""),
    (_drop("keys"), "keys", "required section [keys] missing", ""),
    (_top(keys={"signing_key": "k", "command_key": "d"}), "keys.command_key", "unknown key",
     "did you mean 'command_keys'?"),
    (_top(batch={"max_readings": 0}), "batch.max_readings", "out of range", ""),
    (_top(batch={"max_ms": 10, "max_bytes": 5}), "batch.max_bytes", "unknown key",
     "did you mean 'max_ms'?"),
    (_top(outbox={"cap": "lots"}), "outbox.cap", "not a size", ""),
    (_top(outbox={"cap": "1KiB"}), "outbox.cap", "below the minimum", ""),
    (_top(outbox={"cap": "1GiB", "cap_bytes": 1 << 30}), "outbox.cap", "not both", ""),
    (_top(outbox={"cap": "4MiB", "reserve": "2MiB"}), "outbox.reserve", "quarter of cap", ""),
    (_top(outbox={"reserve": "some"}), "outbox.reserve", "not a size", ""),
    (_top(uplink={"host": "localhost", "protocol": 5}), "uplink.protocol", "(a string)",
     "did you mean '5'?"),
    (_top(uplink={"host": "localhost", "protocol": "3.1"}), "uplink.protocol", "is not one of",
     "did you mean '3.1.1'?"),
    (_top(uplink={"host": "localhost", "keepalive": 0}), "uplink.keepalive", "out of range", ""),
    (_top(uplink={"host": "localhost", "topic_prefix": "city/#"}), "uplink.topic_prefix",
     "not a valid topic prefix", ""),
    (_top(uplink={"host": "localhost", "qos": 1}), "uplink.qos", "unknown key", ""),
    (_top(uplink={"port": 1883}), "uplink.host", "required key missing", ""),
    (_top(uplink={"host": "localhost", "tls": {"ca_file": "/nonexistent/ca.pem"}}),
     "uplink.tls.ca_file", "file does not exist", ""),
    (_top(uplink={"host": "localhost",
                  "tls": {"ca_file": "/etc/hostname", "cert_file": "/etc/hostname"}}),
     "uplink.tls.key_file", "needs both cert_file and key_file", ""),
    (_top(uplink={"host": "localhost", "username": "u", "password_file": "nope.txt"}),
     "uplink.password_file", "file does not exist", ""),
    (_top(uplink={"host": "localhost", "password_file": "/etc/hostname"}), "uplink.password_file",
     "without username", ""),
    (_set("buses", 0, baud=9601), "buses[0].baud", "not a standard rate", "did you mean 9600?"),
    (_set("buses", 0, parity="X"), "buses[0].parity", "is not one of", ""),
    (_set("buses", 0, bytesize=7), "buses[0].bytesize", "8 data bits", ""),
    (_set("buses", 0, host="h"), "buses[0].host", 'only for kind = "tcp"', ""),
    (_set("buses", 1, baud=9600), "buses[1].baud", "only for serial buses", ""),
    (_set("buses", 1, port="502"), "buses[1].port", "expected an integer", ""),
    (_set("buses", 1, kind="modbus"), "buses[1].kind", "is not one of", ""),
    (_set("buses", 1, timeout_max=0), "buses[1].timeout_max", "out of range > 0", ""),
    (_top(commands={"allow_unsynced_clock": "yes"}), "commands.allow_unsynced_clock",
     "expected true or false", ""),
    (_top(commands={"allow_unsync_clock": True}), "commands.allow_unsync_clock", "unknown key",
     "did you mean 'allow_unsynced_clock'?"),
    (_set("devices", 0, unit=3), "devices[0].unit", "unknown key", "did you mean 'unit_id'?"),
    (_set("devices", 0, tags={"pole": 7}), "devices[0].tags.pole", "expected a string", ""),
    (_set("devices", 0, interval=0), "devices[0].interval", "too short", ""),
    (_set("devices", 0, name="lamp 1"), "devices[0].name", "not a valid name", ""),
]


@pytest.mark.parametrize(("mutate", "path", "text", "hint"), SECTION_CASES,
                         ids=[c[1] + ":" + c[2][:20] for c in SECTION_CASES])
def test_section_check(write: Writer, config: Doc, mutate: Any, path: str, text: str,
                       hint: str) -> None:
    mutate(config)
    found = fails(write, config)
    assert paths(found) == [path], "\n".join(map(str, found))
    assert text in found[0].message and found[0].hint == hint
    assert found[0].file.endswith("agent.toml")


def test_toml_error_in_config(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('gateway_id = "x"\n[[buses]\n', encoding="utf-8")
    found = problems(lambda: load_config(path))
    assert len(found) == 1 and "invalid TOML" in found[0].message and "line 2" in found[0].message


def test_missing_config_file(tmp_path: Path) -> None:
    found = problems(lambda: load_config(tmp_path / "nope.toml"))
    assert len(found) == 1 and "cannot read file" in found[0].message


def test_docs_reference_config_is_accepted_but_for_missing_files(tmp_path: Path) -> None:
    docs = (PROFILES.parent / "docs" / "profiles.md").read_text("utf-8")
    section = docs.split("## Gateway config", 1)[1]
    block = section.split("```toml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "agent.toml"
    path.write_text(block, encoding="utf-8")
    found = problems(lambda: load_config(path, profiles=load_profiles(PROFILES)))
    # every key is known and valid; only the files it names are absent on this machine
    assert {p.path for p in found} <= {"uplink.password_file", "uplink.tls.ca_file",
                                       "uplink.tls.cert_file", "uplink.tls.key_file"}
    assert all("file does not exist" in p.message for p in found)


def test_devices_writing_the_same_keys_share_one_key_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """Memory (issue #15): while agent.toml loads, a thousand devices are alive at once with the
    keys each wrote (~470 bytes a frozenset): the devices that wrote the same keys share one;
    the tables read hold no instance dict."""
    import edge_agent.config.load as load
    from edge_agent.profiles.fields import Problems, Table

    seen: list[Any] = []
    real = getattr(load, "cross_check")  # noqa: B009  # (not exported: patched where it is used)

    def spy(buses: Any, devices: Any, *args: Any, **kwargs: Any) -> Any:
        seen.extend(devices)
        return real(buses, devices, *args, **kwargs)

    monkeypatch.setattr(load, "cross_check", spy)
    load_config(EXAMPLE)
    ids: dict[frozenset[str], set[int]] = {}
    for entry in seen:
        ids.setdefault(entry.keys, set()).add(id(entry.keys))
    assert len(seen) > len(ids) and all(len(v) == 1 for v in ids.values()), ids
    assert not hasattr(Table({}, "", Problems("x", [])), "__dict__")


def test_device_tables_are_made_one_at_a_time(write: Writer, config: Doc,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Memory (issue #15): agent.toml's device and bus tables are read one at a time, so a table
    (with its set of used keys) is freed before the next one is made — the load's transient peak
    is memory the process keeps, and the poller's objects only fill it. Problems of the items
    that are not tables still name each one, in document order."""
    import gc

    from edge_agent.profiles.fields import Problems, Table

    def tables_alive() -> int:
        gc.collect()
        return sum(isinstance(o, Table) for o in gc.get_objects()) - 1  # not ``top``

    sink: list[Problem] = []
    top = Table({"devices": [{"name": "a"}, 7, {"name": "b"}, {"name": "c"}]}, "",
                Problems("agent.toml", sink))
    names = []
    for t in top.each_table("devices"):
        assert tables_alive() == 1, "an earlier table is still alive"
        names.append(t.data["name"])
    assert names == ["a", "b", "c"]
    assert [p.path for p in sink] == ["devices[1]"]
    assert [t.data["name"] for t in top.tables("devices")] == ["a", "b", "c"]
    # and the loader reads devices and buses that way (never the whole list of tables)
    real = Table.tables

    def whole_list(self: Table, key: str) -> list[Table]:
        assert key not in ("devices", "buses"), f"{key}: every table made at once"
        return real(self, key)

    monkeypatch.setattr(Table, "tables", whole_list)
    cfg = load_config(write("agent.toml", config))
    assert [d.name for d in cfg.devices] == [d["name"] for d in config["devices"]]


def test_a_parsed_document_is_consumed_only_when_the_loader_parsed_it(write: Writer,
                                                                       config: Doc) -> None:
    """Memory (issue #15): the arrays of tables of a document load_config parsed itself are
    emptied as they are read (the parsed TOML shrinks instead of staying whole to the end); a
    document the caller passes (a rollout bundle merged with local settings) is left as given."""
    import copy

    from edge_agent.profiles.fields import Problems, Table

    items: list[Any] = [{"name": "a"}, 7, {"name": "b"}]
    top = Table({"devices": items}, "", Problems("agent.toml", []))
    assert [t.data["name"] for t in top.each_table("devices", consume=True)] == ["a", "b"]
    assert items == [None, 7, None]

    path = write("agent.toml", config)
    given = copy.deepcopy(config)
    cfg = load_config(path, data=given)
    assert given == config
    assert load_config(path) == cfg
