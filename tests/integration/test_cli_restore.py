"""`trackerbackup verify` and `restore` of the database type, as an operator runs them,
on a database given by `sqlite.host_path` (no container; the test bed proves the rest)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from tests.kit.cli import trackerbackup as cli
from tests.testbed.tree import create_tree


def rows(db: Path) -> list[tuple[object, ...]]:
    connection = sqlite3.connect(db)
    try:
        return connection.execute("SELECT id, value FROM items ORDER BY id").fetchall()
    finally:
        connection.close()


def write_rows(db: Path, values: range) -> None:
    connection = sqlite3.connect(db)
    try:
        connection.execute("CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, value)")
        connection.executemany("INSERT OR REPLACE INTO items VALUES (?, ?)",
                               ((v, f"v{v}") for v in values))
        connection.commit()
    finally:
        connection.close()


@pytest.fixture
def site(tmp_path: Path) -> tuple[Path, Path]:
    """(config, live database): a tracker-owned database and one committed backup."""
    live_dir = tmp_path / "storage" / "tracker" / "lib" / "database"
    live_dir.mkdir(parents=True)
    live = live_dir / "tracker.db"
    write_rows(live, range(1, 101))
    os.chown(live, 1000, 1000)
    os.chmod(live, 0o640)
    config = tmp_path / "trackerbackup.toml"
    config.write_text(
        f'[general]\nbackup_dir = "{tmp_path}/backups"\nrun_dir = "{tmp_path}/run"\n'
        f'docker = "/nonexistent/docker"\n[sqlite]\nhost_path = "{live}"\n')
    result = cli(config, "run", "database")
    assert result.returncode == 0, result.stderr
    return config, live


def only_backup(config: Path) -> Path:
    backups = sorted((config.parent / "backups" / "database").glob("2*"))
    assert len(backups) == 1
    return backups[0]


def test_verify_checks_the_newest_backup_and_list_shows_when(site: tuple[Path, Path]) -> None:
    config, _ = site

    verified = cli(config, "verify", "database")
    listing = cli(config, "list", "database")

    assert verified.returncode == 0, verified.stderr
    assert "PRAGMA integrity_check (full): ok" in verified.stdout
    assert "row counts of 1 tables match the manifest" in verified.stdout
    assert (only_backup(config) / "verification.toml").exists()
    assert listing.stdout.splitlines()[1].split()[3:6][0] == "yes"
    assert " ok " in listing.stdout.splitlines()[1]


def test_a_flipped_byte_fails_verify_and_restore_refuses(site: tuple[Path, Path],
                                                         tmp_path: Path) -> None:
    config, _ = site
    backup = only_backup(config)
    artifact = backup / "tracker.db.zst"
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0x01
    artifact.write_bytes(bytes(data))

    verified = cli(config, "verify", "database")
    listing = cli(config, "list", "database")
    latest = cli(config, "restore", "database", "--latest", "--target", str(tmp_path / "out"))
    by_id = cli(config, "restore", "database", "--id", backup.name, "--target",
                str(tmp_path / "out"))

    assert verified.returncode == 1
    assert f"database {backup.name}: FAILED" in verified.stdout
    assert "stored bytes differ from what was written" in verified.stdout
    assert "FAILED verification" in verified.stderr
    assert " NO " in listing.stdout.splitlines()[1]
    assert latest.returncode == 2
    assert "no verified database backup to restore" in latest.stderr
    assert by_id.returncode == 1
    assert f"backup {backup.name} failed verification" in by_id.stderr
    assert not (tmp_path / "out" / "tracker.db").exists()


def test_restore_to_a_target_directory_gives_the_backed_up_rows(site: tuple[Path, Path],
                                                               tmp_path: Path) -> None:
    config, live = site
    write_rows(live, range(101, 151))  # changes after the backup

    result = cli(config, "restore", "database", "--latest", "--target", str(tmp_path / "out"))

    assert result.returncode == 0, result.stderr
    assert rows(tmp_path / "out" / "tracker.db") == [(v, f"v{v}") for v in range(1, 101)]
    assert len(rows(live)) == 150  # the live database was not touched


def test_restore_in_place_dry_run_consent_and_safety_copy(site: tuple[Path, Path]) -> None:
    config, live = site
    write_rows(live, range(101, 151))
    Path(f"{live}-journal").write_bytes(b"")  # a stale companion that must go

    dry = cli(config, "restore", "database", "--latest", "--dry-run")
    refused = cli(config, "restore", "database", "--latest")
    assert len(rows(live)) == 150
    done = cli(config, "restore", "database", "--latest", "--yes")

    assert dry.returncode == 0, dry.stderr
    assert "1. verify backup" in dry.stdout
    assert "(asks first unless --yes)" in dry.stdout
    assert refused.returncode == 2
    assert "pass --yes" in refused.stderr
    assert done.returncode == 0, done.stderr
    assert rows(live) == [(v, f"v{v}") for v in range(1, 101)]
    info = live.stat()
    assert (info.st_uid, info.st_gid, info.st_mode & 0o7777) == (1000, 1000, 0o640)
    assert not Path(f"{live}-journal").exists()
    safety = list((config.parent / "backups" / "safety").glob("database-*"))
    assert len(safety) == 1
    assert len(rows(safety[0] / "tracker.db")) == 150
    assert (safety[0] / "restore.toml").exists()
    assert not (safety[0] / "RESTORE-IN-PROGRESS").exists()



def test_restore_in_place_without_a_safety_copy_keeps_only_its_record(
        site: tuple[Path, Path], tmp_path: Path) -> None:
    config, live = site
    write_rows(live, range(101, 151))

    to_target = cli(config, "restore", "database", "--latest", "--no-safety-copy",
                    "--target", str(tmp_path / "out"))
    done = cli(config, "restore", "database", "--latest", "--yes", "--no-safety-copy")

    assert to_target.returncode == 2
    assert "--no-safety-copy is for a database restored in place" in to_target.stderr
    assert done.returncode == 0, done.stderr
    assert "keep no copy of" in done.stdout
    assert rows(live) == [(v, f"v{v}") for v in range(1, 101)]
    [safety] = (config.parent / "backups" / "safety").glob("database-*")
    assert sorted(p.name for p in safety.iterdir()) == ["restore.toml"]
    assert 'put_back = ""' in (safety / "restore.toml").read_text()

@pytest.fixture
def selective_site(tmp_path: Path) -> tuple[Path, Path]:
    """(config, compose_dir): the deployer's tree and one selective backup of it."""
    compose = create_tree(tmp_path)
    config = tmp_path / "trackerbackup.toml"
    config.write_text(
        f'[general]\nbackup_dir = "{tmp_path}/backups"\nrun_dir = "{tmp_path}/run"\n'
        f'compose_dir = "{compose}"\ndocker = "/nonexistent/docker"\n'
        f'[selective]\npaths = ["storage/tracker/etc", ".env"]\n')
    result = cli(config, "run", "selective")
    assert result.returncode == 0, result.stderr
    return config, compose


def test_selective_verify_and_restore_into_a_target(selective_site: tuple[Path, Path],
                                                   tmp_path: Path) -> None:
    config, compose = selective_site
    env_at_backup = (compose / ".env").read_text()
    (compose / ".env").write_text("changed later\n")
    out = tmp_path / "restored"

    verified = cli(config, "verify", "selective")
    dry = cli(config, "restore", "selective", "--latest", "--target", str(out), "--dry-run")
    assert not out.exists()  # a dry run writes nothing, not even the target
    restored = cli(config, "restore", "selective", "--latest", "--target", str(out))
    only = cli(config, "restore", "selective", "--latest", "--target", str(tmp_path / "only"),
               "--only", str(compose / "storage/tracker/etc"))
    missing = cli(config, "restore", "selective", "--latest", "--target", str(tmp_path / "x"),
                  "--only", "/no/such/path")
    no_target = cli(config, "restore", "selective", "--latest")

    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "archive members read, every one restorable" in verified.stdout
    assert dry.returncode == 0, dry.stderr
    assert f"write {out}{compose}/.env" in dry.stdout
    assert restored.returncode == 0, restored.stderr
    inside = Path(f"{out}{compose}")
    assert (inside / ".env").read_text() == env_at_backup
    restored_toml = inside / "storage/tracker/etc/tracker.toml"
    assert (restored_toml.stat().st_uid, restored_toml.stat().st_gid) == (1000, 1000)
    assert (restored_toml.parent.stat().st_mode & 0o7777) == 0o2770
    assert only.returncode == 0, only.stderr
    assert not Path(f"{tmp_path}/only{compose}/.env").exists()
    assert Path(f"{tmp_path}/only{compose}/storage/tracker/etc/tracker.toml").exists()
    assert missing.returncode == 2
    assert "--only matched nothing" in missing.stderr
    assert no_target.returncode == 2
    assert "--target DIR, or over the live tree with --in-place" in no_target.stderr
