"""The selective archive, checked member by member on a deployer-shaped tree."""

from __future__ import annotations

import io
import os
import socket
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.testbed.tree import GRAFANA_UID, TRACKER_UID, create_tree
from trackerbackup import config
from trackerbackup.errors import BackupFailed
from trackerbackup.repository import Repository
from trackerbackup.sources import files
from trackerbackup.sources.files import FilesSource, member_name
from trackerbackup.sources.walk import Entry
from trackerbackup.stream import CHUNK, open_raw


def make_config(tmp_path: Path, **selective: object) -> config.Config:
    document = {
        "general": {"compose_dir": str(tmp_path / "opt/torrust"),
                    "backup_dir": str(tmp_path / "backups"),
                    "run_dir": str(tmp_path / "run")},
        "selective": selective,
    }
    return config.from_document(document)


def archive_members(conf: config.Config) -> dict[str, tarfile.TarInfo]:
    [backup] = Repository(conf.general.backup_dir).backups("selective")
    artifact = backup.manifest.artifacts[0]
    with open_raw(backup.path / artifact.name, artifact.compression) as raw, \
            tarfile.open(fileobj=raw, mode="r|") as tar:
        return {m.name: m for m in tar}


def run_selective(conf: config.Config) -> None:
    source = FilesSource(conf, conf.type("selective"))
    plan = source.plan()
    with Repository(conf.general.backup_dir).begin("selective") as partial:
        result = source.write(partial, plan)
        partial.commit({**result.details, "warnings": list(result.warnings)})


def test_archive_preserves_owners_modes_links_and_times(tmp_path: Path) -> None:
    compose = create_tree(tmp_path)
    etc = compose / "storage/tracker/etc"
    os.symlink("tracker.toml", etc / "current.toml")
    os.utime(etc / "tracker.toml", (1_700_000_000.5, 1_700_000_000.5))
    datasource = compose / "storage/grafana/provisioning/datasources/prometheus.yml"
    os.chown(datasource, GRAFANA_UID, GRAFANA_UID)  # another service's user
    conf = make_config(tmp_path)
    run_selective(conf)
    members = archive_members(conf)
    prefix = str(compose).lstrip("/")
    etc_member = members[f"{prefix}/storage/tracker/etc"]
    assert etc_member.isdir()
    assert (etc_member.uid, etc_member.gid) == (TRACKER_UID, TRACKER_UID)
    assert etc_member.mode == 0o2770
    toml = members[f"{prefix}/storage/tracker/etc/tracker.toml"]
    assert (toml.uid, toml.mode) == (TRACKER_UID, 0o640)
    assert toml.mtime == pytest.approx(1_700_000_000.5)
    link = members[f"{prefix}/storage/tracker/etc/current.toml"]
    assert link.issym()
    assert link.linkname == "tracker.toml"
    [key] = [m for name, m in members.items()
             if name.startswith(f"{prefix}/storage/caddy/data/caddy/certificates/")
             and name.endswith("/tracker.example.com.key")]
    assert key.mode == 0o600
    assert key.size == (Path("/") / key.name).stat().st_size
    grafana = members[f"{prefix}/storage/grafana/provisioning/datasources/prometheus.yml"]
    assert (grafana.uid, grafana.gid) == (GRAFANA_UID, GRAFANA_UID)
    assert members[f"{prefix}/.env"].mode == 0o640
    assert f"{prefix}/docker-compose.yml" in members
    assert f"{prefix}/storage/prometheus/etc/prometheus.yml" in members
    assert not any("tracker.db" in name for name in members), "the database is not selective"


def test_file_contents_round_trip(tmp_path: Path) -> None:
    create_tree(tmp_path)
    conf = make_config(tmp_path)
    run_selective(conf)
    [backup] = Repository(conf.general.backup_dir).backups("selective")
    artifact = backup.manifest.artifacts[0]
    with open_raw(backup.path / artifact.name, "zstd") as raw, \
            tarfile.open(fileobj=raw, mode="r|") as tar:
        for member in tar:
            if member.isfile():
                data = tar.extractfile(member)
                assert data is not None
                assert data.read() == (Path("/") / member.name).read_bytes()


def test_missing_path_is_a_warning_in_manifest_not_a_crash(tmp_path: Path) -> None:
    compose = create_tree(tmp_path)
    conf = make_config(tmp_path, paths=["storage/tracker/etc", "storage/nope"])
    run_selective(conf)
    [backup] = Repository(conf.general.backup_dir).backups("selective")
    assert backup.manifest.source["missing"] == [str(compose / "storage/nope")]
    assert any("storage/nope" in w for w in backup.warnings)


def test_nothing_to_archive_fails_and_records_nothing(tmp_path: Path) -> None:
    (tmp_path / "opt/torrust").mkdir(parents=True)
    conf = make_config(tmp_path, paths=["storage/nope"])
    with pytest.raises(BackupFailed, match="none of the configured paths"):
        run_selective(conf)
    assert Repository(conf.general.backup_dir).backups("selective") == []


def test_backup_dir_inside_the_tree_and_excludes_are_left_out(tmp_path: Path) -> None:
    compose = create_tree(tmp_path)
    document = {
        "general": {"compose_dir": str(compose), "backup_dir": str(compose / "storage/backup"),
                    "run_dir": str(tmp_path / "run")},
        "selective": {"paths": ["storage"], "exclude": ["*.key", "*/tracker/lib/*"]},
    }
    conf = config.from_document(document)
    run_selective(conf)
    run_selective(conf)  # the first backup now lies inside the archived tree
    [newest, _] = Repository(conf.general.backup_dir).backups("selective")
    artifact = newest.manifest.artifacts[0]
    with open_raw(newest.path / artifact.name, "zstd") as raw, \
            tarfile.open(fileobj=raw, mode="r|") as tar:
        names = [m.name for m in tar]
    assert not any("storage/backup" in n for n in names)
    assert not any(n.endswith(".key") for n in names)
    assert not any("tracker/lib/" in n for n in names)
    assert any(n.endswith("Caddyfile") for n in names)


# --- odd files and files that change while read -------------------------------------------


def single_file_site(tmp_path: Path, name: str | bytes = "data.bin",
                     content: bytes = b"x" * 300_000) -> tuple[config.Config, Path]:
    """A tree with one regular file (so the first file read is that one)."""
    directory = tmp_path / "opt/torrust/etc"
    directory.mkdir(parents=True)
    path = Path(os.fsdecode(os.path.join(os.fsencode(directory), os.fsencode(name))))
    path.write_bytes(content)
    return make_config(tmp_path, paths=["etc"]), path


def on_first_read(monkeypatch: pytest.MonkeyPatch, change: Callable[[], None]) -> None:
    """Change the file system while the archive reads its first file (a concurrent writer)."""
    original = files._ExactReader.read
    changed: list[bool] = []

    def read(self: files._ExactReader, n: int = CHUNK) -> bytes:
        if not changed:
            changed.append(True)
            change()
        return original(self, n)

    monkeypatch.setattr(files._ExactReader, "read", read)


def test_a_socket_in_the_tree_is_skipped_and_named(tmp_path: Path) -> None:
    compose = create_tree(tmp_path)
    path = compose / "storage/tracker/etc/admin.sock"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(path))
        conf = make_config(tmp_path)
        run_selective(conf)
    [backup] = Repository(conf.general.backup_dir).backups("selective")
    assert f"socket skipped ({files.SPECIAL_REASON}): {path}" in backup.warnings
    assert member_name(path) not in archive_members(conf)
    assert member_name(compose / "storage/tracker/etc/tracker.toml") in archive_members(conf)


@pytest.mark.parametrize("how", ["dotdot", "symlinked compose_dir"])
def test_the_backup_dir_is_never_archived_whatever_path_leads_to_it(tmp_path: Path,
                                                                    how: str) -> None:
    real = create_tree(tmp_path / "real")
    compose = real
    backup_dir = f"{real}/storage/tracker/../backup"
    if how == "symlinked compose_dir":
        (tmp_path / "opt").mkdir()
        compose = tmp_path / "opt/torrust"
        compose.symlink_to(real)
        backup_dir = f"{real}/storage/backup"
    conf = config.from_document({
        "general": {"compose_dir": str(compose), "backup_dir": backup_dir,
                    "run_dir": str(tmp_path / "run")},
        "selective": {"paths": ["storage"]},
    })
    run_selective(conf)
    run_selective(conf)  # the first backup now lies inside the archived tree
    newest = Repository(conf.general.backup_dir).backups("selective")[0]
    artifact = newest.manifest.artifacts[0]
    with open_raw(newest.path / artifact.name, "zstd") as raw, \
            tarfile.open(fileobj=raw, mode="r|") as tar:
        names = [m.name for m in tar]
    assert any(n.endswith("Caddyfile") for n in names)
    assert not any("storage/backup" in n for n in names), names


def test_a_file_that_shrinks_while_read_fails_the_run_and_records_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf, path = single_file_site(tmp_path)
    on_first_read(monkeypatch, lambda: os.truncate(path, 1000))
    with pytest.raises(BackupFailed, match="shrank while it was read") as caught:
        run_selective(conf)
    assert "padded with zeros" in str(caught.value)
    assert Repository(conf.general.backup_dir).backups("selective") == []
    assert Repository(conf.general.backup_dir).leftovers("selective") == []


@pytest.mark.parametrize("name", ["data.bin", b"caf\xe9\x1b[2J.toml"])
def test_a_file_that_grows_while_read_is_named_in_the_warnings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str | bytes
) -> None:
    conf, path = single_file_site(tmp_path, name)

    def append() -> None:
        with open(path, "ab") as handle:
            handle.write(b"appended")

    on_first_read(monkeypatch, append)
    run_selective(conf)
    [backup] = Repository(conf.general.backup_dir).backups("selective")
    shown = str(path.parent / ("caf\\xe9\\x1b[2J.toml" if isinstance(name, bytes) else name))
    assert f"grew while read, archived its first 300,000 bytes: {shown}" in backup.warnings
    assert backup.verified
    [member] = [m for m in archive_members(conf).values() if m.isfile()]
    assert member.size == 300_000


def test_a_file_changed_in_place_while_read_is_named_in_the_warnings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf, path = single_file_site(tmp_path)

    def rewrite() -> None:
        with open(path, "r+b") as handle:
            handle.write(b"y" * 10)
        os.utime(path, ns=(0, 1))

    on_first_read(monkeypatch, rewrite)
    run_selective(conf)
    [backup] = Repository(conf.general.backup_dir).backups("selective")
    assert f"changed while read, archived as read: {path}" in backup.warnings


@pytest.mark.parametrize("now", ["fifo", "symlink"])
def test_a_file_swapped_after_it_was_listed_is_archived_as_what_it_is_now(
    tmp_path: Path, now: str
) -> None:
    """O_NOFOLLOW | O_NONBLOCK: a FIFO is not waited for, a symlink is not followed."""
    secret = tmp_path / "secret"
    secret.write_text("root's secret")
    _conf, path = single_file_site(tmp_path)
    listed = os.lstat(path)  # what the walk saw
    path.unlink()
    if now == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to(secret)
    out = io.BytesIO()
    tar = files.TarWriter(out)
    tar.add(Entry(str(path), None, str(path), listed))  # a blocking open would hang here
    tar.close()
    out.seek(0)
    with tarfile.open(fileobj=out, mode="r") as archive:
        members = archive.getmembers()
    kind = "a FIFO" if now == "fifo" else "a symbolic link"
    if now == "fifo":  # a restore refuses FIFOs: not archived
        assert members == []
        assert tar.warnings == [f"changed while read (now {kind}): {path}",
                                f"FIFO skipped ({files.SPECIAL_REASON}): {path}"]
    else:
        [member] = members
        assert member.issym()
        assert member.size == 0
        assert tar.warnings == [f"changed while read (now {kind}): {path}"]
