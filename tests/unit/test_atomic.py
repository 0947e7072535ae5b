"""Atomic publication: the old content or the new one, with the mode asked for."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from trackerbackup.atomic import write_atomically


def test_replaces_content_with_an_explicit_mode_whatever_the_umask(tmp_path: Path) -> None:
    target = tmp_path / "manifest.toml"
    target.write_text("old")
    previous = os.umask(0o077)
    try:
        write_atomically(target, b"new", mode=0o644)
    finally:
        os.umask(previous)
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.toml"]


def test_a_failed_rename_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "metrics.prom"
    target.mkdir()  # renaming a file over a directory fails
    with pytest.raises(IsADirectoryError):
        write_atomically(target, b"x")
    assert target.is_dir()
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.prom"]
