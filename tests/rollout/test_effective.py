"""A bundle on a box: merged with the box's own settings, checked like check-config, and never
able to change what is local."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.errors import ConfigError
from edge_agent.rollout.effective import check_offline, load_bundle_dir, write_tree

from .helpers import bundle, local_config, managed


def stage(tmp_path: Path, config: str, name: str = "b") -> Path:
    b = bundle(1, config)
    d = tmp_path / name
    write_tree(d, b.config, b.profiles)
    return d


def test_the_bundle_runs_with_the_boxs_identity(tmp_path: Path) -> None:
    local = local_config(tmp_path / "etc")
    cfg = load_bundle_dir(local, stage(tmp_path, managed(port=1600, unit_id=4)))
    assert cfg.gateway_id == "gw-a"
    assert cfg.state_dir == tmp_path / "etc" / "state"  # relative to the LOCAL file
    assert cfg.keys.signing_key == tmp_path / "etc" / "signing.key"
    assert cfg.outbox.path == tmp_path / "etc" / "state" / "outbox.sqlite"
    assert cfg.rollout_tags == {"district": "harbour"}
    assert cfg.devices[0].unit_id == 4 and cfg.buses["pole-1"].port == 1600
    assert cfg.source == tmp_path / "b" / "agent.toml"


@pytest.mark.parametrize("line", ['gateway_id = "gw-evil"', 'state_dir = "/tmp"',
                                  'profiles_dir = "/tmp"'])
def test_local_keys_are_refused(tmp_path: Path, line: str) -> None:
    local = local_config(tmp_path / "etc")
    with pytest.raises(ConfigError) as e:
        load_bundle_dir(local, stage(tmp_path, line + "\n" + managed()))
    key = line.split()[0]
    assert any(p.path == key and "set on the gateway only" in p.message for p in e.value.problems)


def test_local_sections_are_refused(tmp_path: Path) -> None:
    local = local_config(tmp_path / "etc")
    text = managed() + '\n[keys]\nsigning_key = "/tmp/k"\n\n[outbox]\npath = "/tmp/o.db"\n'
    with pytest.raises(ConfigError) as e:
        load_bundle_dir(local, stage(tmp_path, text))
    assert {p.path for p in e.value.problems} >= {"keys", "outbox.path"}


def test_what_check_config_refuses_is_refused_with_its_place(tmp_path: Path) -> None:
    local = local_config(tmp_path / "etc")
    text = managed() + ('\n[[devices]]\nname = "lamp-02"\nprofile = "street_lamp"\n'
                        'bus = "pole-1"\nunit_id = 1\n')  # unit id clash on the bus
    with pytest.raises(ConfigError) as e:
        load_bundle_dir(local, stage(tmp_path, text))
    assert any("unit" in p.message for p in e.value.problems), e.value.problems


def test_files_a_bundle_names_must_exist_on_the_gateway(tmp_path: Path) -> None:
    local = local_config(tmp_path / "etc")
    text = managed() + '\n[uplink]\nhost = "127.0.0.1"\n\n[uplink.tls]\nca_file = "ca.pem"\n'
    with pytest.raises(ConfigError) as e:
        load_bundle_dir(local, stage(tmp_path, text))
    assert any(p.path == "uplink.tls.ca_file" for p in e.value.problems)
    check_offline(text, bundle(1, text).profiles)  # the operator's machine: not checked there


def test_offline_check_names_the_operators_files(tmp_path: Path) -> None:
    text = managed() + "bogus = 1\n"
    with pytest.raises(ConfigError) as e:
        check_offline(text, bundle(1, managed()).profiles, config_name="mine.toml")
    assert [p.file for p in e.value.problems] == ["mine.toml"]
