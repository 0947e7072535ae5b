"""The operator's runbook for the selective type, through the real command line (on the
kit's `site`: the deployer's tree and a config for it)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kit.cli import trackerbackup
from trackerbackup import lock


def test_run_list_prune(site: Path) -> None:
    config = site / "trackerbackup.toml"
    first = trackerbackup(config, "run", "selective")
    assert first.returncode == 0, first.stderr
    assert "verified" in first.stdout
    second = trackerbackup(config, "run", "selective")
    assert second.returncode == 0, second.stderr

    listed = trackerbackup(config, "list", "--json")
    assert listed.returncode == 0
    backups = json.loads(listed.stdout)
    assert [b["type"] for b in backups] == ["selective"]  # keep_last=1, keep_daily=7: one day
    assert backups[0]["verified"] is True
    assert backups[0]["artifacts"] == ["files.tar.zst"]
    assert "pruned" in second.stdout

    human = trackerbackup(config, "list")
    assert backups[0]["id"] in human.stdout

    dry = trackerbackup(config, "prune", "--dry-run")
    assert dry.returncode == 0
    backup_id = backups[0]["id"]
    utc_day = f"{backup_id[:4]}-{backup_id[4:6]}-{backup_id[6:8]}"
    assert dry.stdout.split() == ["selective", backup_id, "would", "keep", "last", "1,",
                                  "daily", utc_day]


def test_dry_run_writes_nothing(site: Path) -> None:
    result = trackerbackup(site / "trackerbackup.toml", "run", "selective", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "storage/tracker/etc" in result.stdout
    assert not (site / "backups").exists()


def test_second_concurrent_run_exits_75_naming_the_holder(site: Path) -> None:
    config = site / "trackerbackup.toml"
    with lock.hold(site / "run", "selective"):
        busy = trackerbackup(config, "run", "selective")
        busy_dry_run = trackerbackup(config, "run", "selective", "--dry-run")
        other_type = trackerbackup(config, "run", "database")
    assert busy.returncode == 75
    assert f"PID {os.getpid()}" in busy.stderr
    assert "--wait" in busy.stderr
    assert busy_dry_run.returncode == 75
    assert other_type.returncode == 0, other_type.stderr  # one lock per type
    assert [b["type"] for b in json.loads(trackerbackup(config, "list", "--json").stdout)] \
        == ["database"]
    after = trackerbackup(config, "run", "selective")
    assert after.returncode == 0, after.stderr


def test_usage_and_configuration_errors_exit_2(site: Path) -> None:
    config = site / "trackerbackup.toml"
    unknown = trackerbackup(config, "run", "everything")
    assert unknown.returncode == 2
    assert "unknown backup type 'everything'" in unknown.stderr
    bad = site / "bad.toml"
    bad.write_text("[selective]\ncompresion = 'zstd'\n")
    result = trackerbackup(bad, "run", "selective")
    assert result.returncode == 2
    assert "line 2: selective.compresion" in result.stderr
    assert "did you mean 'compression'" in result.stderr
    assert trackerbackup(config, "frobnicate").returncode == 2


def test_disabled_type_is_skipped_unless_forced(site: Path) -> None:
    config = site / "trackerbackup.toml"
    config.write_text(config.read_text() + "[selective]\nenabled = false\n")
    skipped = trackerbackup(config, "run", "selective")
    assert skipped.returncode == 0
    assert "disabled" in skipped.stderr
    assert not (site / "backups").exists()
    forced = trackerbackup(config, "run", "--force", "selective")
    assert forced.returncode == 0, forced.stderr
    assert len(json.loads(trackerbackup(config, "list", "--json").stdout)) == 1


@pytest.fixture
def world_traversable_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="tb-unreadable-") as name:
        path = Path(name)
        path.chmod(0o755)
        yield path


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch users")
def test_unreadable_path_is_an_environment_error(world_traversable_dir: Path) -> None:
    base = world_traversable_dir
    compose = base / "opt/torrust"
    (compose / "storage/tracker/etc").mkdir(parents=True)
    (compose / "storage/tracker/etc/tracker.toml").write_text("x")
    os.chmod(compose / "storage/tracker/etc", 0o700)  # root's, unreadable for nobody
    for path in (base / "opt", compose, compose / "storage", compose / "storage/tracker"):
        path.chmod(0o755)
    (base / "backups").mkdir()
    os.chown(base / "backups", 65534, 65534)
    config = base / "trackerbackup.toml"
    config.write_text(
        f'[general]\ncompose_dir = "{compose}"\nbackup_dir = "{base}/backups"\n'
        f'run_dir = "{base}/backups/run"\n[selective]\npaths = ["storage/tracker"]\n'
    )
    config.chmod(0o644)
    result = trackerbackup(config, "run", "selective", user=65534)
    assert result.returncode == 3, result.stderr
    assert "not readable" in result.stderr
    assert str(compose / "storage/tracker/etc") in result.stderr
    assert sorted(p.name for p in (base / "backups").iterdir()) == ["run", "selective"]
    assert list((base / "backups/selective").iterdir()) == []


def test_short_disk_space_is_refused_before_writing(site: Path) -> None:
    config = site / "trackerbackup.toml"
    config.write_text(config.read_text().replace(
        "[general]\n", "[general]\nmin_free_bytes = 1_000_000_000_000_000\n"))
    result = trackerbackup(config, "run", "selective")
    assert result.returncode == 3, result.stderr
    assert "not enough free space" in result.stderr
    assert "general.backup_dir" in result.stderr
    assert not list((site / "backups").glob("selective/*"))
