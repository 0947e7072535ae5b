"""The backup repository: layout, manifest, and an atomic commit that survives SIGKILL."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from trackerbackup.errors import BackupFailed
from trackerbackup.repository import MANIFEST, Repository, format_id, parse_id

ROOT = Path(__file__).parents[2]


def commit_one(repo: Repository, payload: bytes = b"hello " * 1000) -> Path:
    with repo.begin("selective") as partial:
        with partial.artifact("data.bin.zst", "zstd", 3) as out:
            out.write(payload)
        return partial.commit({"source": {"kind": "test"}})


def test_commit_publishes_a_complete_backup(tmp_path: Path) -> None:
    repo = Repository(tmp_path / "backups")
    path = commit_one(repo)
    assert path.parent == tmp_path / "backups" / "selective"
    manifest = tomllib.loads((path / MANIFEST).read_text())
    assert manifest["type"] == "selective"
    assert manifest["id"] == path.name
    assert manifest["verified"] is True
    assert manifest["tool_version"]
    assert manifest["host"]
    artifact = manifest["artifacts"][0]
    assert artifact["name"] == "data.bin.zst"
    assert artifact["raw_size"] == 6000
    assert artifact["size"] == (path / "data.bin.zst").stat().st_size
    assert len(artifact["sha256"]) == 64
    [backup] = repo.backups("selective")
    assert backup.id == path.name
    assert backup.verified
    assert repo.leftovers("selective") == []


def test_backups_are_readable_by_root_only(tmp_path: Path) -> None:
    repo = Repository(tmp_path / "backups")
    path = commit_one(repo)
    for entry in [tmp_path / "backups", path.parent, path]:
        assert stat.S_IMODE(entry.stat().st_mode) == 0o700, entry
    for entry in path.iterdir():
        assert stat.S_IMODE(entry.stat().st_mode) == 0o600, entry


def test_ids_sort_by_time_and_are_unique_within_one_second(tmp_path: Path) -> None:
    repo = Repository(tmp_path / "backups")
    moment = datetime(2026, 11, 26, 3, 0, 0, tzinfo=UTC)
    (repo.type_dir("database") / format_id(moment)).mkdir(parents=True)
    second = repo.new_id("database", moment)
    assert second != format_id(moment)
    assert second > format_id(moment)
    assert parse_id(second) > moment
    ids = [commit_one(repo).name for _ in range(5)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 5


def test_failure_inside_a_run_leaves_nothing(tmp_path: Path) -> None:
    repo = Repository(tmp_path / "backups")
    with pytest.raises(RuntimeError), repo.begin("selective") as partial:
        with partial.artifact("a.zst", "zstd", 3) as out:
            out.write(b"x")
        raise RuntimeError("dump failed")
    assert repo.backups("selective") == []
    assert repo.leftovers("selective") == []


def test_a_backup_without_artifacts_is_refused(tmp_path: Path) -> None:
    repo = Repository(tmp_path / "backups")
    with pytest.raises(BackupFailed, match="no artifact"), repo.begin("selective") as partial:
        partial.commit({})
    assert repo.backups("selective") == []


def test_directories_without_a_valid_manifest_are_not_backups(tmp_path: Path) -> None:
    repo = Repository(tmp_path / "backups")
    commit_one(repo)
    (repo.type_dir("selective") / "20260101T000000.000000Z").mkdir()
    broken = repo.type_dir("selective") / "20260102T000000.000000Z"
    broken.mkdir()
    (broken / MANIFEST).write_text("not = [toml")
    assert len(repo.backups("selective")) == 1


def test_delete_removes_the_backup(tmp_path: Path) -> None:
    repo = Repository(tmp_path / "backups")
    commit_one(repo)
    [backup] = repo.backups("selective")
    repo.delete(backup)
    assert repo.backups("selective") == []
    assert not backup.path.exists()
    assert repo.leftovers("selective") == []


# A child process writes a backup and SIGKILLs itself at one point of the commit protocol.
CRASH_CHILD = textwrap.dedent(
    """
    import os, shutil, signal, sys
    from pathlib import Path
    from trackerbackup.repository import Repository

    point = sys.argv[2]
    repo = Repository(Path(sys.argv[1]))

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    if point == "delete":
        shutil.rmtree = die
        repo.delete(repo.backups("selective")[0])
    with repo.begin("selective") as partial:
        with partial.artifact("data.bin.zst", "zstd", 3) as out:
            out.write(b"a" * 100_000)
            if point == "mid-artifact":
                die()
        if point == "before-manifest":
            die()
        if point == "before-rename":
            os.rename = die
        partial.commit({})
    """
)


@pytest.mark.parametrize("point", ["mid-artifact", "before-manifest", "before-rename", "delete"])
def test_sigkill_at_any_point_leaves_no_listed_backup_and_a_clean_next_run(
    tmp_path: Path, point: str
) -> None:
    repo = Repository(tmp_path / "backups")
    if point == "delete":
        commit_one(repo)
    child = subprocess.run(
        [sys.executable, "-c", CRASH_CHILD, str(repo.root), point],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
        check=False,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()
    assert repo.backups("selective") == []
    assert repo.leftovers("selective"), "the crash should have left a hidden directory"
    removed = repo.remove_leftovers("selective")
    assert removed
    path = commit_one(repo)
    assert [b.path for b in repo.backups("selective")] == [path]
    assert repo.leftovers("selective") == []
