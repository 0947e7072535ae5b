"""The operator's runbook for the selective type, through the real command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.trees import make_tree
from trackerbackup import lock

ROOT = Path(__file__).parents[2]


@pytest.fixture
def site(tmp_path: Path) -> Path:
    compose = tmp_path / "opt/torrust"
    make_tree(compose)
    (tmp_path / "trackerbackup.toml").write_text(
        f'[general]\ncompose_dir = "{compose}"\nbackup_dir = "{tmp_path}/backups"\n'
        f'run_dir = "{tmp_path}/run"\n'
    )
    return tmp_path


def trackerbackup(site: Path, *args: str, user: int | None = None,
                  config: Path | None = None, timeout: float = 300,
                  umask: int = -1) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trackerbackup", "--config",
         str(config or site / "trackerbackup.toml"), "--log-target", "console", *args],
        cwd=ROOT, capture_output=True, text=True, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, user=user, timeout=timeout, umask=umask,
    )


def test_run_list_prune(site: Path) -> None:
    first = trackerbackup(site, "run", "selective")
    assert first.returncode == 0, first.stderr
    assert "verified" in first.stdout
    second = trackerbackup(site, "run", "selective")
    assert second.returncode == 0, second.stderr

    listed = trackerbackup(site, "list", "--json")
    assert listed.returncode == 0
    backups = json.loads(listed.stdout)
    assert [b["type"] for b in backups] == ["selective"]  # keep_last=1, keep_daily=7: one day
    assert backups[0]["verified"] is True
    assert backups[0]["artifacts"] == ["files.tar.zst"]
    assert "pruned" in second.stdout

    human = trackerbackup(site, "list")
    assert backups[0]["id"] in human.stdout

    dry = trackerbackup(site, "prune", "--dry-run")
    assert dry.returncode == 0
    assert backups[0]["id"] in dry.stdout
    assert "would keep" in dry.stdout
    assert "newest verified" in dry.stdout or "last 1" in dry.stdout


def test_dry_run_writes_nothing(site: Path) -> None:
    result = trackerbackup(site, "run", "selective", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "storage/tracker/etc" in result.stdout
    assert not (site / "backups").exists()


def test_second_concurrent_run_exits_75_naming_the_holder(site: Path) -> None:
    with lock.hold(site / "run", "selective"):
        busy = trackerbackup(site, "run", "selective")
        other_type = trackerbackup(site, "run", "selective", "--dry-run")
    assert busy.returncode == 75
    assert f"PID {os.getpid()}" in busy.stderr
    assert "--wait" in busy.stderr
    assert other_type.returncode == 75
    after = trackerbackup(site, "run", "selective")
    assert after.returncode == 0, after.stderr


def test_usage_and_configuration_errors_exit_2(site: Path) -> None:
    unknown = trackerbackup(site, "run", "everything")
    assert unknown.returncode == 2
    assert "unknown backup type 'everything'" in unknown.stderr
    bad = site / "bad.toml"
    bad.write_text("[selective]\ncompresion = 'zstd'\n")
    result = trackerbackup(site, "run", "selective", config=bad)
    assert result.returncode == 2
    assert "line 2: selective.compresion" in result.stderr
    assert "did you mean 'compression'" in result.stderr
    assert trackerbackup(site, "frobnicate").returncode == 2


def test_disabled_type_is_skipped_unless_forced(site: Path) -> None:
    conf = site / "trackerbackup.toml"
    conf.write_text(conf.read_text() + "[selective]\nenabled = false\n")
    skipped = trackerbackup(site, "run", "selective")
    assert skipped.returncode == 0
    assert "disabled" in skipped.stderr
    assert not (site / "backups").exists()
    forced = trackerbackup(site, "run", "--force", "selective")
    assert forced.returncode == 0, forced.stderr
    assert len(json.loads(trackerbackup(site, "list", "--json").stdout)) == 1


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
    result = trackerbackup(base, "run", "selective", user=65534, config=config)
    assert result.returncode == 3, result.stderr
    assert "not readable" in result.stderr
    assert str(compose / "storage/tracker/etc") in result.stderr
    selective = base / "backups/selective"
    assert not selective.exists() or not list(selective.iterdir())


def test_short_disk_space_is_refused_before_writing(site: Path) -> None:
    conf = site / "trackerbackup.toml"
    conf.write_text(conf.read_text().replace(
        "[general]\n", "[general]\nmin_free_bytes = 1_000_000_000_000_000\n"))
    result = trackerbackup(site, "run", "selective")
    assert result.returncode == 3, result.stderr
    assert "not enough free space" in result.stderr
    assert "general.backup_dir" in result.stderr
    assert not list((site / "backups").glob("selective/*"))
