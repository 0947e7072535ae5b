"""What `check` and the next restore say about a restore that was interrupted, for each
kind of safety copy it kept (or did not keep)."""

from __future__ import annotations

from pathlib import Path

import tomli_w

from trackerbackup.inplace import IN_PROGRESS, SAFETY_DIR, interrupted_restores


def marker(backup_dir: Path, name: str, **record: str) -> Path:
    safety = backup_dir / SAFETY_DIR / name
    safety.mkdir(parents=True)
    (safety / IN_PROGRESS).write_text(tomli_w.dumps(record))
    return safety


def test_each_interrupted_restore_says_how_to_get_the_old_database_back(tmp_path: Path) -> None:
    sqlite = marker(tmp_path, "database-1", live="/srv/tracker.db")  # before put_back existed
    mysql = marker(tmp_path, "database-2", live="database tracker on mysql",
                   put_back="load tracker.sql.zst into database tracker on mysql: zstd -dc")
    marker(tmp_path, "database-3", live="database tracker on mysql", put_back="")
    (tmp_path / SAFETY_DIR / "database-4").mkdir()  # finished: no marker

    first, second, third = interrupted_restores(tmp_path)

    assert f"is in {sqlite}" in first
    assert "copy the files (except RESTORE-IN-PROGRESS) next to /srv/tracker.db" in first
    assert f"is in {mysql}" in second
    assert "load tracker.sql.zst into database tracker on mysql" in second
    assert "kept no copy of it (--no-safety-copy): run the restore again" in third
    assert "is in" not in third
