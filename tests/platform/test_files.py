"""Socket group and public files: what the control socket and the metrics file need."""

from __future__ import annotations

import grp
import os
import stat
from pathlib import Path

import pytest

from edge_agent.platform.files import give_group, write_public


def test_the_group_already_right_is_kept_without_a_chown(tmp_path: Path) -> None:
    p = tmp_path / "sock"
    p.touch()
    mine = grp.getgrgid(os.stat(p).st_gid).gr_name
    assert give_group(p, mine) == "kept"


def test_another_group_is_given(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("changing a file's group to one we are not in needs root")
    p = tmp_path / "sock"
    p.touch()
    other = next(g for g in grp.getgrall() if g.gr_gid != os.stat(p).st_gid)
    assert give_group(p, other.gr_name) == "changed"
    assert os.stat(p).st_gid == other.gr_gid


def test_an_unknown_group_is_left_alone(tmp_path: Path) -> None:
    p = tmp_path / "sock"
    p.touch()
    before = os.stat(p).st_gid
    assert give_group(p, "no-such-group-edge-agent-test") == "absent"
    assert os.stat(p).st_gid == before


def test_a_public_file_is_readable_whatever_the_umask(tmp_path: Path) -> None:
    p = tmp_path / "metrics.prom"
    old = os.umask(0o077)  # the unit's UMask
    try:
        write_public(p, "a 1\n")
        write_public(p, "a 2\n")
    finally:
        os.umask(old)
    assert p.read_text() == "a 2\n"
    assert stat.S_IMODE(p.stat().st_mode) == 0o644
    assert [x.name for x in tmp_path.iterdir()] == ["metrics.prom"]  # no temporary left


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    p = tmp_path / "metrics.prom"
    write_public(p, "a 1\n")
    with pytest.raises(UnicodeEncodeError):
        write_public(p, "bad \udcff\n")
    assert p.read_text() == "a 1\n"
    assert [x.name for x in tmp_path.iterdir()] == ["metrics.prom"]
