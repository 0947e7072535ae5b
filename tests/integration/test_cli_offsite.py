"""Off-site copies through the real command line and a real restic, local-path repository.

The sftp repository in the test bed (tests/e2e/test_offsite_sftp.py) proves the network
cases; these prove the behaviour fast.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.kit.cli import trackerbackup
from tests.kit.wait import wait_until

RESTIC = shutil.which("restic") or "/usr/bin/restic"
PASSWORD = "offsite-test-pw-7f3a9c"
pytestmark = pytest.mark.skipif(not os.path.exists(RESTIC), reason="restic is not installed")


def configure(site: Path, *, host: str = "tracker-a", extra: str = "") -> Path:
    password = site / "restic.pw"
    if not password.exists():
        password.write_text(PASSWORD + "\n")
        password.chmod(0o600)
    config = site / f"offsite-{host}.toml"
    base = (site / "trackerbackup.toml").read_text()
    config.write_text(
        base + f'\n[monitoring]\ntextfile_dir = "{site}"\n'
        f'\n[offsite]\nrepository = "{site}/repo"\npassword_file = "{password}"\n'
        f'host = "{host}"\ntimeout = 60\n{extra}\n'
        '\n[selective.retention]\nkeep_last = 10\n')
    config.chmod(0o600)
    return config


def tb(site: Path, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = trackerbackup(config, *args)
    assert PASSWORD not in result.stdout + result.stderr
    return result


def restic_snapshots(site: Path) -> list[dict[str, Any]]:
    out = subprocess.run([RESTIC, "snapshots", "--json"], check=True, capture_output=True,
                         env={"RESTIC_REPOSITORY": f"{site}/repo",
                              "RESTIC_PASSWORD_FILE": f"{site}/restic.pw",
                              "PATH": os.environ["PATH"]})
    return list(json.loads(out.stdout))


def offsite_ids(site: Path, config: Path, *extra: str) -> list[tuple[str, bool]]:
    listed = tb(site, config, "offsite", "list", *extra)
    assert listed.returncode == 0, listed.stderr
    rows = [line.split() for line in listed.stdout.splitlines()[1:]]
    return [(row[2], row[3] == "yes") for row in rows]


def local_ids(site: Path, config: Path) -> list[str]:
    listed = tb(site, config, "list", "selective", "--json")
    return [b["id"] for b in json.loads(listed.stdout) if b["verified"]]


@pytest.fixture
def pushed(site: Path) -> Path:
    config = configure(site)
    init = tb(site, config, "offsite", "init")
    assert init.returncode == 0, init.stderr
    first = tb(site, config, "run", "selective")
    assert first.returncode == 0, first.stderr
    return config


def test_a_run_pushes_the_archive_as_one_tagged_tree_snapshot(site: Path,
                                                             pushed: Path) -> None:
    [backup_id] = local_ids(site, pushed)
    assert offsite_ids(site, pushed) == [(backup_id, True)]
    [snapshot] = restic_snapshots(site)
    assert snapshot["paths"] == [f"{site}/backups/.offsite-staging/selective"]
    assert snapshot["hostname"] == "tracker-a"
    assert {"trackerbackup", "type=selective", f"id={backup_id}", "part=tree"} <= \
        set(snapshot["tags"])
    assert not (site / "backups/.offsite-staging/selective").exists()  # removed after the push
    metric = (site / "trackerbackup_selective_offsite.prom").read_text()
    assert 'trackerbackup_offsite_last_run_success{type="selective"} 1' in metric
    assert "trackerbackup_offsite_last_success_timestamp_seconds" in metric


def test_restore_from_offsite_round_trip(site: Path, pushed: Path) -> None:
    shutil.rmtree(site / "backups")  # the host's disk is gone; the repository is not
    target = site / "restored"
    restored = tb(site, pushed, "restore", "selective", "--latest", "--from", "offsite",
                  "--target", str(target), "--yes")
    assert restored.returncode == 0, restored.stderr
    compose = site / "opt/torrust"
    for name in ("docker-compose.yml", ".env", "storage/tracker/etc/tracker.toml"):
        original = compose / name
        if original.exists():
            assert (target / str(compose).lstrip("/") / name).read_bytes() == \
                original.read_bytes()
    assert not list((site / "backups").glob(".offsite-*"))  # the scratch area is gone


def test_unreachable_repository_fails_the_run_and_the_next_run_catches_up(
        site: Path, pushed: Path) -> None:
    (site / "repo").rename(site / "repo.away")
    for _ in range(2):
        failed = tb(site, pushed, "run", "selective")
        assert failed.returncode == 1
        assert "off-site" in failed.stderr
        assert "hint:" in failed.stderr
    metric = (site / "trackerbackup_selective_offsite.prom").read_text()
    assert 'trackerbackup_offsite_last_run_success{type="selective"} 0' in metric
    assert "last_success_timestamp_seconds" in metric  # the last success is kept
    assert len(local_ids(site, pushed)) == 3  # the local backups are intact
    (site / "repo.away").rename(site / "repo")
    caught_up = tb(site, pushed, "run", "selective")
    assert caught_up.returncode == 0, caught_up.stderr
    assert sorted(offsite_ids(site, pushed)) == [(i, True) for i in sorted(local_ids(site,
                                                                                    pushed))]


def test_wrong_password_is_a_clear_failure_and_local_backups_stay(site: Path,
                                                                  pushed: Path) -> None:
    (site / "restic.pw").write_text("not-the-password\n")
    failed = tb(site, pushed, "run", "selective")
    assert failed.returncode == 1
    assert "wrong password" in failed.stderr
    assert "offsite.password_file" in failed.stderr
    assert len(local_ids(site, pushed)) == 2


def test_secret_files_must_be_root_only(site: Path, pushed: Path) -> None:
    (site / "restic.pw").chmod(0o644)
    refused = tb(site, pushed, "run", "selective")
    assert refused.returncode == 2
    assert "chmod 600" in refused.stderr
    checked = tb(site, pushed, "check", "selective")
    assert checked.returncode == 3
    assert "offsite.password_file" in checked.stdout


def test_environment_file_values_reach_restic_but_no_output(site: Path) -> None:
    env_file = site / "restic.env"
    env_file.write_text("export AWS_SECRET_ACCESS_KEY='s3cr3t-key-value'\n")
    env_file.chmod(0o600)
    config = configure(site, extra=f'environment_file = "{env_file}"')
    (site / "repo").mkdir()  # not a repository: restic fails and prints its error
    failed = tb(site, config, "run", "selective")
    assert failed.returncode == 1
    assert "s3cr3t-key-value" not in failed.stdout + failed.stderr


def test_prune_touches_only_this_hosts_snapshots(site: Path, pushed: Path) -> None:
    other = configure(site, host="tracker-b")
    for config in (pushed, other, pushed):
        ran = tb(site, config, "run", "selective")
        assert ran.returncode == 0, ran.stderr
    theirs = offsite_ids(site, other, "--host", "tracker-b")
    strict = configure(site, extra="keep_last = 1\nkeep_daily = 0\nkeep_weekly = 0\n"
                       "keep_monthly = 0")
    pruned = tb(site, strict, "offsite", "prune")
    assert pruned.returncode == 0, pruned.stderr
    assert "forgot" in pruned.stdout
    assert len(offsite_ids(site, strict)) == 1
    assert offsite_ids(site, other, "--host", "tracker-b") == theirs
    everyone = offsite_ids(site, strict, "--all-hosts")
    assert len(everyone) == 1 + len(theirs)


def test_a_killed_push_leaves_a_stale_lock_the_next_prune_removes(site: Path,
                                                                  pushed: Path) -> None:
    """restic killed mid-push: its lock names a PID that no longer exists on this machine,
    which `restic unlock` proves stale; a live lock would stay."""
    env = {"RESTIC_REPOSITORY": f"{site}/repo", "RESTIC_PASSWORD_FILE": f"{site}/restic.pw",
           "PATH": os.environ["PATH"]}
    killed = subprocess.Popen(
        [RESTIC, "backup", "--stdin", "--stdin-filename", "files.tar", "--host", "tracker-a",
         "--tag", "trackerbackup,type=selective,id=20200101T000000.000000Z,part=data"],
        stdin=subprocess.PIPE, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # a lock file that is there but not yet written is one restic ignores: wait for content
    wait_until(lambda: any(p.stat().st_size > 0 for p in (site / "repo/locks").iterdir()), 30,
               what="restic's lock")
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    assert any((site / "repo/locks").iterdir())
    assert tb(site, pushed, "run", "selective").returncode == 0  # a shared lock is no bar
    strict = configure(site, extra="keep_last = 1\nkeep_daily = 0\nkeep_weekly = 0\n"
                       "keep_monthly = 0")
    pruned = tb(site, strict, "offsite", "prune")  # forget needs the exclusive lock
    assert pruned.returncode == 0, pruned.stderr
    assert "stale" in pruned.stderr
    assert not any((site / "repo/locks").iterdir())
    assert "forgot" in pruned.stdout


def test_verify_offsite_checks_the_repository_and_a_sampled_backup(site: Path,
                                                                   pushed: Path) -> None:
    verified = tb(site, pushed, "verify", "--offsite", "selective")
    assert verified.returncode == 0, verified.stderr
    assert "off-site repository: no errors were found" in verified.stdout
    assert "off-site selective" in verified.stdout
