"""The selective archive, checked member by member on a deployer-shaped tree."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from tests.trees import make_tree
from trackerbackup import config
from trackerbackup.errors import BackupFailed
from trackerbackup.repository import Repository
from trackerbackup.sources.files import FilesSource
from trackerbackup.stream import open_raw


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
    artifact = backup.manifest["artifacts"][0]
    with open_raw(backup.path / artifact["name"], artifact["compression"]) as raw, \
            tarfile.open(fileobj=raw, mode="r|") as tar:
        return {m.name: m for m in tar}


def run_selective(conf: config.Config) -> None:
    source = FilesSource(conf, conf.type("selective"))
    plan = source.plan()
    with Repository(conf.general.backup_dir).begin("selective") as partial:
        result = source.write(partial, plan)
        partial.commit({**result.details, "warnings": list(result.warnings)})


def test_archive_preserves_owners_modes_links_and_times(tmp_path: Path) -> None:
    compose = tmp_path / "opt/torrust"
    make_tree(compose)
    conf = make_config(tmp_path)
    run_selective(conf)
    members = archive_members(conf)
    prefix = str(compose).lstrip("/")
    etc = members[f"{prefix}/storage/tracker/etc"]
    assert etc.isdir()
    assert (etc.uid, etc.gid) == (1000, 1000)
    assert etc.mode == 0o2770
    toml = members[f"{prefix}/storage/tracker/etc/tracker.toml"]
    assert toml.uid == 1000
    assert toml.mtime == pytest.approx(1_700_000_000.5)
    link = members[f"{prefix}/storage/tracker/etc/current.toml"]
    assert link.issym()
    assert link.linkname == "tracker.toml"
    key = members[f"{prefix}/storage/caddy/data/caddy/certificates/tracker.example.key"]
    assert key.mode == 0o600
    assert key.size == 300
    grafana = members[f"{prefix}/storage/grafana/provisioning/datasources/prometheus.yml"]
    assert (grafana.uid, grafana.gid) == (472, 472)
    assert members[f"{prefix}/.env"].mode == 0o640
    assert f"{prefix}/docker-compose.yml" in members
    assert f"{prefix}/storage/prometheus/etc/prometheus.yml" in members
    assert not any("tracker.db" in name for name in members), "the database is not selective"


def test_file_contents_round_trip(tmp_path: Path) -> None:
    compose = tmp_path / "opt/torrust"
    make_tree(compose)
    conf = make_config(tmp_path)
    run_selective(conf)
    [backup] = Repository(conf.general.backup_dir).backups("selective")
    artifact = backup.manifest["artifacts"][0]
    with open_raw(backup.path / artifact["name"], "zstd") as raw, \
            tarfile.open(fileobj=raw, mode="r|") as tar:
        for member in tar:
            if member.isfile():
                data = tar.extractfile(member)
                assert data is not None
                assert data.read() == (Path("/") / member.name).read_bytes()


def test_missing_path_is_a_warning_in_manifest_not_a_crash(tmp_path: Path) -> None:
    compose = tmp_path / "opt/torrust"
    make_tree(compose)
    conf = make_config(tmp_path, paths=["storage/tracker/etc", "storage/nope"])
    run_selective(conf)
    [backup] = Repository(conf.general.backup_dir).backups("selective")
    assert backup.manifest["source"]["missing"] == [str(compose / "storage/nope")]
    assert any("storage/nope" in w for w in backup.manifest["warnings"])


def test_nothing_to_archive_fails_and_records_nothing(tmp_path: Path) -> None:
    (tmp_path / "opt/torrust").mkdir(parents=True)
    conf = make_config(tmp_path, paths=["storage/nope"])
    with pytest.raises(BackupFailed, match="none of the configured paths"):
        run_selective(conf)
    assert Repository(conf.general.backup_dir).backups("selective") == []


def test_backup_dir_inside_the_tree_and_excludes_are_left_out(tmp_path: Path) -> None:
    compose = tmp_path / "opt/torrust"
    make_tree(compose)
    document = {
        "general": {"compose_dir": str(compose), "backup_dir": str(compose / "storage/backup"),
                    "run_dir": str(tmp_path / "run")},
        "selective": {"paths": ["storage"], "exclude": ["*.key", "*/tracker/lib/*"]},
    }
    conf = config.from_document(document)
    run_selective(conf)
    run_selective(conf)  # the first backup now lies inside the archived tree
    [newest, _] = Repository(conf.general.backup_dir).backups("selective")
    artifact = newest.manifest["artifacts"][0]
    with open_raw(newest.path / artifact["name"], "zstd") as raw, \
            tarfile.open(fileobj=raw, mode="r|") as tar:
        names = [m.name for m in tar]
    assert not any("storage/backup" in n for n in names)
    assert not any(n.endswith(".key") for n in names)
    assert not any("tracker/lib/" in n for n in names)
    assert any(n.endswith("Caddyfile") for n in names)
