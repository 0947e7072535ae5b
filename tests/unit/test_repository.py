"""The backup repository: layout, manifest, and an atomic commit that survives SIGKILL."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.kit import filesystems
from trackerbackup.errors import BackupFailed, EnvironmentProblem
from trackerbackup.manifest import MANIFEST
from trackerbackup.repository import Repository, format_id, parse_id

ROOT = Path(__file__).parents[2]


def commit_one(repo: Repository, payload: bytes = b"hello " * 1000) -> Path:
    with repo.begin("selective") as partial:
        with partial.artifact("data.bin.zst", "zstd", 3) as out:
            out.write(payload)
        return partial.commit({"source": {"kind": "test"}}).path


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


# --- what is found on disk is not trusted ------------------------------------------------


def test_commit_returns_the_backup_exactly_as_the_listing_reads_it(tmp_path: Path) -> None:
    repo = Repository(tmp_path / "backups")
    with repo.begin("selective") as partial:
        with partial.artifact("data.bin.zst", "zstd", 3) as out:
            out.write(b"payload" * 100)
        committed = partial.commit({"warnings": ["w"]})
    [listed] = repo.backups("selective")
    assert committed == listed
    assert committed.verified
    assert committed.warnings == ("w",)


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o777])
def test_backups_are_0700_and_0600_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    previous = os.umask(umask)
    try:
        path = commit_one(Repository(tmp_path / "new/parent/backups"))
    finally:
        os.umask(previous)
    for entry in [tmp_path / "new/parent/backups", path.parent, path]:
        assert stat.S_IMODE(entry.stat().st_mode) == 0o700, entry
    for entry in path.iterdir():
        assert stat.S_IMODE(entry.stat().st_mode) == 0o600, entry
    for parent in [tmp_path / "new", tmp_path / "new/parent"]:  # never world-writable
        assert stat.S_IMODE(parent.stat().st_mode) == 0o755, parent


def test_a_loose_backup_dir_is_tightened_before_writing(tmp_path: Path) -> None:
    (tmp_path / "backups" / "selective").mkdir(parents=True)
    (tmp_path / "backups").chmod(0o755)
    (tmp_path / "backups" / "selective").chmod(0o750)
    commit_one(Repository(tmp_path / "backups"))
    assert stat.S_IMODE((tmp_path / "backups").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "backups" / "selective").stat().st_mode) == 0o700


def refusal(repo: Repository) -> str:
    with pytest.raises(EnvironmentProblem) as caught, repo.begin("selective"):
        pass
    assert caught.value.exit_code == 3
    return str(caught.value)


def test_a_backup_dir_others_may_write_or_own_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    assert "writable by other users (mode 0777)" in refusal(Repository(shared))
    foreign = tmp_path / "foreign"
    foreign.mkdir(mode=0o700)
    os.chown(foreign, 65534, 65534)
    assert "owned by uid 65534" in refusal(Repository(foreign))
    assert list(shared.iterdir()) == []
    assert list(foreign.iterdir()) == []


def test_a_backup_dir_under_a_directory_anyone_may_change_is_refused(tmp_path: Path) -> None:
    open_parent = tmp_path / "open"
    open_parent.mkdir()
    open_parent.chmod(0o777)  # no sticky bit: anyone may rename backups/ away
    message = refusal(Repository(open_parent / "backups"))
    assert f"{open_parent}, a parent of general.backup_dir, is writable by every user" in message
    assert not (open_parent / "backups").exists()


@pytest.mark.parametrize("link", ["backups", "backups/selective"])
def test_symlinked_repository_directories_are_refused_and_nothing_outside_is_touched(
    tmp_path: Path, link: str
) -> None:
    outside = tmp_path / "outside"
    (outside / ".partial-20260101T000000.000000Z").mkdir(parents=True)
    (outside / "precious").write_text("keep me")
    if link == "backups/selective":
        (tmp_path / "backups").mkdir(mode=0o700)
    (tmp_path / link).symlink_to(outside)
    repo = Repository(tmp_path / "backups")
    assert "is a symbolic link, not a directory" in refusal(repo)
    for call in (repo.remove_leftovers, repo.scan, repo.backups):
        with pytest.raises(EnvironmentProblem, match="symbolic link"):
            call("selective")
    assert sorted(p.name for p in outside.iterdir()) == [
        ".partial-20260101T000000.000000Z", "precious"]


def test_planted_entries_are_left_alone_or_removed_without_following(tmp_path: Path) -> None:
    repo = Repository(tmp_path / "backups")
    good = commit_one(repo)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep me")
    shutil.copytree(good, outside / "copy")
    type_dir = repo.type_dir("selective")
    (type_dir / "20991231T000000.000000Z").symlink_to(outside / "copy")
    (type_dir / "20991230T000000.000000Z").write_text("a file")
    (type_dir / "lost+found").mkdir()
    (type_dir / ".partial-20260101T000000.000000Z").write_text("a file, not a directory")
    (type_dir / ".partial-20260102T000000.000000Z").symlink_to(outside)
    os.mkfifo(type_dir / ".deleting-20260103T000000.000000Z")

    backups, ignored = repo.scan("selective")

    assert [b.path for b in backups] == [good]
    assert {i.path.name: i.reason for i in ignored} == {
        "20991231T000000.000000Z": "a symbolic link, not a backup",
        "20991230T000000.000000Z": "a regular file, not a backup",
        "lost+found": "not a backup id",
    }
    assert len(repo.remove_leftovers("selective")) == 3
    assert sorted(p.name for p in type_dir.iterdir()) == sorted([
        "20991230T000000.000000Z", "20991231T000000.000000Z", good.name, "lost+found"])
    assert sorted(p.name for p in outside.iterdir()) == ["copy", "precious"]
    assert commit_one(repo).exists()  # the next run is not disturbed


def test_a_fifo_in_place_of_a_manifest_is_reported_not_waited_for(tmp_path: Path) -> None:
    repo = Repository(tmp_path / "backups")
    path = commit_one(repo)
    (path / MANIFEST).unlink()
    os.mkfifo(path / MANIFEST)
    backups, [ignored] = repo.scan("selective")  # a blocking open would hang here
    assert backups == []
    assert ignored.reason == "manifest.toml is unusable: a FIFO, not a regular file"


@pytest.mark.parametrize("name", ["latest", "20261126T103942Z", "..", "2026-11-26",
                                  "20261126T103942.176226Z.bak"])
def test_only_backup_ids_parse(name: str) -> None:
    with pytest.raises(ValueError, match="not a backup id"):
        parse_id(name)


def test_a_manifest_copied_under_another_id_or_type_is_not_a_backup(tmp_path: Path) -> None:
    repo = Repository(tmp_path / "backups")
    path = commit_one(repo)
    shutil.copytree(path, repo.type_dir("selective") / "20200101T000000.000000Z")
    shutil.copytree(path, repo.type_dir("database") / path.name)
    repo.type_dir("database").chmod(0o700)
    [listed], [copy] = repo.scan("selective")
    assert listed.path == path
    assert copy.reason == (f"manifest.toml is unusable: its id is {path.name!r}, not its "
                           "directory's")
    [], [other_type] = repo.scan("database")
    assert other_type.reason == ("manifest.toml is unusable: its type is 'selective', not "
                                 "its directory's")


@pytest.mark.parametrize("damage", ["delete", "truncate", "symlink"])
def test_a_backup_whose_artifact_is_damaged_is_not_verified(tmp_path: Path,
                                                            damage: str) -> None:
    repo = Repository(tmp_path / "backups")
    artifact = commit_one(repo) / "data.bin.zst"
    if damage == "truncate":
        os.truncate(artifact, 10)
    else:
        artifact.unlink()
    if damage == "symlink":
        artifact.symlink_to(tmp_path / "elsewhere")
    [backup] = repo.backups("selective")
    assert backup.verified is False
    assert backup.problems[0].startswith("artifact data.bin.zst ")
    assert backup.summary()["problems"] == list(backup.problems)


def test_a_disk_that_fills_during_the_artifact_or_the_manifest_is_named_with_its_fix(
    tmp_path: Path
) -> None:
    with filesystems.tmpfs(tmp_path / "small", "size=256k") as mount:
        repo = Repository(mount / "backups")
        kept = commit_one(repo, b"k" * 1000)
        with pytest.raises(EnvironmentProblem) as artifact_full, \
                repo.begin("selective") as full, full.artifact("data.bin", "none", 0) as out:
            out.write(os.urandom(512 << 10))
        with pytest.raises(EnvironmentProblem) as manifest_full, \
                repo.begin("selective") as partial:
            with partial.artifact("data.bin", "none", 0) as out:
                out.write(b"small")
            filler = mount / "filler"
            with contextlib.suppress(OSError), open(filler, "wb", buffering=0) as handle:
                while True:
                    handle.write(b"f" * 4096)
            partial.commit({"warnings": ["x" * 100_000]})
        filler.unlink()
        assert [b.path for b in repo.backups("selective")] == [kept]
        assert repo.leftovers("selective") == []
    for caught, op in ((artifact_full, "write the backup"), (manifest_full, "commit backup")):
        assert caught.value.op == op
        assert caught.value.message == "No space left on device"
        assert caught.value.hint is not None
        assert "free space" in caught.value.hint
