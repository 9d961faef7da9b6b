"""The local demo cluster re-issues its set when its copies are of an older format."""

from __future__ import annotations

from pathlib import Path

from lic_world import World

from tmr.local.cluster import _drop_old_format_copies


def test_old_format_copies_are_dropped_current_ones_kept(world: World, tmp_path: Path) -> None:
    current = world.issue(7).copies[0].path
    lic_dir = tmp_path / "licenses"
    lic_dir.mkdir()
    (lic_dir / current.name).write_bytes(current.read_bytes())
    old = lic_dir / "6000123-42-6-130-0000001.tmrlic"
    old.write_bytes(b'{"format":1}\n' + b"0" * 128 + b"\n")
    garbage = lic_dir / "garbage.tmrlic"  # not an old format: left for the backend to name
    garbage.write_bytes(b"junk\n")
    assert _drop_old_format_copies([lic_dir])
    assert sorted(p.name for p in lic_dir.iterdir()) == sorted([current.name, garbage.name])
    assert not _drop_old_format_copies([lic_dir])
