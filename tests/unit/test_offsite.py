"""The off-site pieces that need no restic: secret files, environment file, snapshot
grouping, what a sync pushes, error hints."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.unit.test_monitoring import logs  # noqa: F401  # the fixture
from trackerbackup import config
from trackerbackup.errors import ConfigError, UsageError
from trackerbackup.execute import CommandFailed
from trackerbackup.log import Event
from trackerbackup.manifest import Manifest
from trackerbackup.offsite import (
    MANIFEST,
    OffsiteStorageFull,
    Snapshot,
    failure,
    group,
    is_lock_failure,
    read_environment_file,
    secret_file_problems,
)
from trackerbackup.offsite_sync import pending, raw_name, sync
from trackerbackup.repository import Backup


def offsite_config(tmp_path: Path, **extra: str) -> config.Config:
    return config.from_document({"offsite": {
        "repository": str(tmp_path / "repo"), "password_file": str(tmp_path / "pw"), **extra}})


def test_password_file_is_required_with_a_repository() -> None:
    with pytest.raises(ConfigError, match=r"offsite\.password_file: required"):
        config.from_document({"offsite": {"repository": "/srv/repo"}})


def test_unknown_types_and_options_without_equals_are_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        config.from_document({"offsite": {"types": ["nope"], "options": ["sftp.command"]}})
    assert "unknown type(s) nope" in str(caught.value)
    assert "key=value" in str(caught.value)


def test_secret_files_must_be_private(tmp_path: Path) -> None:
    conf = offsite_config(tmp_path, environment_file=str(tmp_path / "env"))
    (tmp_path / "pw").write_text("x")
    (tmp_path / "pw").chmod(0o640)
    problems = secret_file_problems(conf.offsite)
    assert any("chmod 600" in p and "password_file" in p for p in problems)
    assert any("environment_file" in p and "No such file" in p for p in problems)
    (tmp_path / "pw").chmod(0o600)
    (tmp_path / "env").symlink_to(tmp_path / "pw")
    assert secret_file_problems(conf.offsite) == [
        f"offsite.environment_file: {tmp_path / 'env'} is not a regular file"]


def test_environment_file_lines(tmp_path: Path) -> None:
    path = tmp_path / "env"
    path.write_text("# S3\nexport AWS_ACCESS_KEY_ID=AKIA1\nAWS_SECRET_ACCESS_KEY='a b'\n\n"
                    'B2_ACCOUNT_KEY="k=v"\n')
    assert read_environment_file(path) == {
        "AWS_ACCESS_KEY_ID": "AKIA1", "AWS_SECRET_ACCESS_KEY": "a b", "B2_ACCOUNT_KEY": "k=v"}
    path.write_text("AWS_SECRET_ACCESS_KEY hunter22\n")
    with pytest.raises(UsageError) as caught:
        read_environment_file(path)
    assert "line 1" in str(caught.value)
    assert "hunter22" not in str(caught.value)


def snap(sid: str, host: str, backup_id: str, part: str) -> Snapshot:
    return Snapshot(sid, host, {"type": "database", "id": backup_id, "part": part},
                    (f"/{part}",))


def test_snapshots_group_into_backups_complete_only_with_a_manifest() -> None:
    grouped = group([snap("1", "a", "X", "data"), snap("2", "a", "X", MANIFEST),
                     snap("3", "a", "Y", "data"), snap("4", "b", "X", "data")])
    assert [(b.host, b.id, b.complete, [s.id for s in b.snapshots]) for b in grouped] == [
        ("a", "X", True, ["1", "2"]), ("a", "Y", False, ["3"]), ("b", "X", False, ["4"])]


def local_backup(backup_id: str, verified: bool = True) -> Backup:
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    manifest = Manifest(type="database", id=backup_id, started=moment, finished=moment,
                        tool_version="", host="", verified=verified, artifacts=(), source={})
    return Backup(Path("/b") / backup_id, manifest, verified=verified)


def test_sync_pushes_verified_backups_newer_than_the_newest_offsite_oldest_first() -> None:
    remote = group([snap("1", "a", "20260102", "data"), snap("2", "a", "20260102", MANIFEST),
                    snap("3", "a", "20260104", "data")])  # an interrupted push of ...04
    local = [local_backup(i) for i in ("20260105", "20260104", "20260102", "20260101")]
    local.append(local_backup("20260103", verified=False))
    assert [b.id for b in pending(local, remote)] == ["20260104", "20260105"]
    assert [b.id for b in pending(local, [])] == ["20260101", "20260102", "20260104",
                                                  "20260105"]


def test_raw_names_drop_the_compression_suffix() -> None:
    assert raw_name("tracker.db.zst", "zstd") == "tracker.db"
    assert raw_name("files.tar.gz", "gzip") == "files.tar"
    assert raw_name("files.tar", "none") == "files.tar"


@pytest.mark.parametrize(("stderr", "hint"), [
    ("Fatal: wrong password or no key found", "password_file"),
    ("Is there a repository at the following location?", "offsite init"),
    ("unable to create lock in backend: repository is already locked by PID 1", "lock"),
    ("subprocess ssh: ssh: connect to host 1.2.3.4 port 22: No route", "network"),
])
def test_failures_name_the_fix(stderr: str, hint: str) -> None:
    error = failure(CommandFailed(["restic", "backup"], 1, stderr, "push"), "push x")
    assert error.hint is not None
    assert hint in error.hint
    assert error.exit_code == 1
    assert not isinstance(error, OffsiteStorageFull)


SFTP_FULL = """Save(<lock/ed78606914>) returned error, retrying after 1.08s: Write: sftp: \
"Failure" (SSH_FX_FAILURE)
sftp: "Failure" (SSH_FX_FAILURE)
github.com/restic/restic/internal/backend/sftp.(*SFTP).Save
\tgithub.com/restic/restic/internal/backend/sftp/sftp.go:321
main.main
\tgithub.com/restic/restic/cmd/restic/main.go:98
Write
unable to create lock in backend
"""


@pytest.mark.parametrize("stderr", [
    SFTP_FULL,
    "Fatal: unable to save snapshot: open /mnt/repo/tmp-1: no space left on device",
    "Save(<data/ab>) returned error: unexpected HTTP response (507): 507 Insufficient Storage",
])
def test_a_full_storage_is_its_own_error_and_event(stderr: str, tmp_path: Path,
                                                   logs: pytest.LogCaptureFixture,  # noqa: F811
                                                   ) -> None:
    error = failure(CommandFailed(["restic", "backup"], 1, stderr, "push"), "push x")
    assert isinstance(error, OffsiteStorageFull)
    assert "the off-site storage is full" in str(error)
    assert error.hint is not None
    assert "offsite prune" in error.hint
    assert "github.com" not in error.message  # no Go stack trace in the journal

    class FullRestic:
        def snapshots(self, **_: object) -> list[Snapshot]:
            raise error

    (tmp_path / "pw").write_text("x")
    (tmp_path / "pw").chmod(0o600)
    conf = config.from_document({
        "general": {"backup_dir": str(tmp_path / "backups")},
        "offsite": {"repository": str(tmp_path / "repo"), "password_file": str(tmp_path / "pw")}})
    with pytest.raises(OffsiteStorageFull):
        sync(conf, "selective", FullRestic())  # type: ignore[arg-type]
    logged = {r.journal["MESSAGE_ID"] for r in logs.records  # type: ignore[attr-defined]
              if r.levelno == logging.ERROR}
    assert logged == {Event.OFFSITE_STORAGE_FULL.value}


def test_a_lock_file_that_cannot_be_written_is_not_a_stale_lock() -> None:
    assert not is_lock_failure(failure(CommandFailed(["restic"], 1, SFTP_FULL, ""), "push"))
    assert is_lock_failure(failure(CommandFailed(
        ["restic"], 1, "unable to create lock in backend: repository is already locked "
        "exclusively by PID 7 on a by root", ""), "prune"))
