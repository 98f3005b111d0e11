"""The append-only --save directory on real files: first copy kept, evidence beside it, nothing
under a final name but complete files, leftovers of a crashed run removed."""

from __future__ import annotations

from pathlib import Path

from edge_agent.cli.verify_save import SaveDir, file_order


def test_first_copy_stays_and_conflicts_are_kept_beside_it(tmp_path: Path) -> None:
    (tmp_path / ".tmp").mkdir()
    (tmp_path / ".tmp" / "4242.tmp").write_bytes(b"half a batch")  # a run killed mid-write
    save = SaveDir(tmp_path)
    assert list((tmp_path / ".tmp").iterdir()) == []
    assert save.put("gw/1", 7, b"first") == "saved"
    assert save.put("gw/1", 7, b"first") == "same"
    assert save.put("gw/1", 7, b"second") == "conflict"
    assert save.put("gw/1", 7, b"second") == "conflict"  # the same evidence is not kept twice
    save.reject(b"garbage")
    save.sync()
    d = tmp_path / "gw_1"
    assert (d / "7.cose").read_bytes() == b"first"
    evidence = [p for p in d.iterdir() if p.name != "7.cose"]
    assert len(evidence) == 1 and evidence[0].name.startswith("7.conflict-")
    assert evidence[0].read_bytes() == b"second" and save.conflicts_kept == 1
    assert len(list((tmp_path / "_rejected").iterdir())) == 1
    assert list((tmp_path / ".tmp").iterdir()) == []


def test_reading_back_puts_first_copies_before_evidence(tmp_path: Path) -> None:
    names = ["10.cose", "9.conflict-ab.cose", "9.cose", "2.cose", "x.cose"]
    order = sorted((tmp_path / n for n in names), key=file_order)
    assert [p.name for p in order] == ["x.cose", "2.cose", "9.cose", "9.conflict-ab.cose",
                                       "10.cose"]  # fmt: skip
