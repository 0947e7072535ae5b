"""Who may read the backups and the configuration, through the real command line."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.kit.cli import trackerbackup

PING = "http://127.0.0.1:9/ping/0f1e2d3c-s3cret"


@pytest.mark.parametrize("umask", [0o000, 0o777])
def test_backups_are_root_only_whatever_the_umask_and_the_old_mode(site: Path,
                                                                   umask: int) -> None:
    (site / "backups/selective").mkdir(parents=True)
    (site / "backups").chmod(0o755)
    (site / "backups/selective").chmod(0o755)
    result = trackerbackup(site, "run", "selective", umask=umask)
    assert result.returncode == 0, result.stderr
    assert f"tightened the mode of {site}/backups from 0755 to 0700" in result.stderr
    for path in (site / "backups").rglob("*"):
        expected = 0o700 if path.is_dir() else 0o600
        assert stat.S_IMODE(path.lstat().st_mode) == expected, path
        assert path.lstat().st_uid == os.geteuid()


@pytest.mark.parametrize("problem", ["symlink", "foreign owner", "world-writable"])
def test_a_backup_dir_others_could_control_is_refused(site: Path, problem: str) -> None:
    backups = site / "backups"
    if problem == "symlink":
        (site / "real").mkdir(mode=0o700)
        backups.symlink_to(site / "real")
    else:
        backups.mkdir(mode=0o700)
        if problem == "foreign owner":
            os.chown(backups, 65534, 65534)
        else:
            backups.chmod(0o777)
    result = trackerbackup(site, "run", "selective")
    assert result.returncode == 3, result.stderr
    expected = {"symlink": "general.backup_dir is a symbolic link, not a directory",
                "foreign owner": "general.backup_dir is owned by uid 65534",
                "world-writable": "general.backup_dir is writable by other users (mode 0777)"}
    assert expected[problem] in result.stderr
    assert "Traceback" not in result.stderr
    assert not list((site / "real" if problem == "symlink" else backups).iterdir())
    check = trackerbackup(site, "check")
    assert check.returncode == 3
    assert f"PROBLEM: open the backup directory: {expected[problem]}" in check.stdout


def test_a_config_whose_ping_token_others_may_read_is_refused_by_run(site: Path) -> None:
    config = site / "trackerbackup.toml"
    config.write_text(config.read_text() + f'[monitoring]\nping_success = "{PING}"\n')
    config.chmod(0o644)
    check = trackerbackup(site, "check")
    assert ("warning: read configuration: 1 problem(s) in the configuration:\n  - the file "
            "is readable by other users (mode 0644) while it holds secrets "
            "(monitoring.ping_success)") in check.stdout
    run = trackerbackup(site, "run", "selective")
    assert run.returncode == 2, run.stderr
    assert f"hint: chmod 600 {config}" in run.stderr
    assert not (site / "backups").exists()
    for output in (check.stdout, check.stderr, run.stdout, run.stderr):
        assert "s3cret" not in output
    config.chmod(0o600)
    assert trackerbackup(site, "run", "selective").returncode == 0


def test_check_reports_a_ping_url_that_cannot_work_without_its_token(site: Path) -> None:
    config = site / "trackerbackup.toml"
    config.write_text(config.read_text()
                      + '[monitoring]\nping_failure = "https://hc-ping.com/a s3cret"\n')
    config.chmod(0o600)
    check = trackerbackup(site, "check")
    assert check.returncode == 3
    assert ("PROBLEM: monitoring.ping_failure (https://hc-ping.com/***): it contains a space "
            "or a control character") in check.stdout
    assert "s3cret" not in check.stdout + check.stderr
