"""Off-site copies to a real sftp repository (openssh-server container, key auth), from a
live tracker stand-in: push, outage and catch-up, restore round trip, kill, pause."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_database_sqlite import add_config
from tests.faults.journal_capture import JournalCapture
from tests.faults.secrets_watch import SecretsWatch
from tests.kit.cli import command, environment, trackerbackup
from tests.kit.wait import wait_until
from tests.testbed.sftp import SftpServer
from tests.testbed.stack import Stack, toml_str
from trackerbackup.log import Event

pytestmark = pytest.mark.testbed
PASSWORD = "sftp-offsite-pw-5c1e0b"
BACKEND_KEY = "backend-key-9d2f6a1e"
BACKEND_PASSWORD = "backend-pw-4b8c03d7"
PROBE = "sftp.command=ssh -i"  # in restic's argv, on purpose: no secret


@pytest.fixture
def watch() -> Iterator[SecretsWatch]:
    """The password and the backend credentials: never in any process's argv (scanned
    every few ms in /proc/*/cmdline for the whole test), never in trackerbackup's output
    (what the journal receives) or in what the test reports."""
    secrets = SecretsWatch()
    secrets.add(password=PASSWORD, backend_key=BACKEND_KEY, backend_password=BACKEND_PASSWORD,
                probe=PROBE)
    secrets.start()
    yield secrets
    secrets.stop()
    assert secrets.scans > 0, "the watch never scanned /proc"
    assert [hit for hit in secrets.hits if not hit.startswith("probe ")] == []


def saw_restic(watch: SecretsWatch) -> bool:
    """The positive control: restic's argv (its -o sftp.command=...) was seen in /proc, so
    the watch did look at restic while it ran."""
    return any(hit.startswith("probe ") and "restic" in hit for hit in watch.hits)


@pytest.fixture
def sftp(images: Any) -> Iterator[SftpServer]:
    with SftpServer() as server:
        yield server


def offsite_config(stack: Stack, server: SftpServer, host: str = "tracker-a") -> str:
    password = stack.root / "restic.pw"
    password.write_text(PASSWORD + "\n")
    password.chmod(0o600)
    credentials = stack.root / "restic.env"  # what an S3 or REST backend would need
    credentials.write_text(f"AWS_SECRET_ACCESS_KEY={BACKEND_KEY}\n"
                           f"RESTIC_REST_PASSWORD='{BACKEND_PASSWORD}'\n")
    credentials.chmod(0o600)
    return f"""
[offsite]
repository = {toml_str(server.repository)}
password_file = {toml_str(str(password))}
environment_file = {toml_str(str(credentials))}
options = [{toml_str("sftp.command=" + server.ssh_command())}]
host = {toml_str(host)}
timeout = 60

[database.retention]
keep_last = 10

[selective.retention]
keep_last = 10
"""


def with_offsite(stack: Stack, server: SftpServer) -> Stack:
    add_config(stack, offsite_config(stack, server))
    init = tb(stack, "offsite", "init")
    assert init.returncode == 0, init.stderr
    return stack


@pytest.fixture
def offsite_stack(sqlite_stack: Stack, sftp: SftpServer, watch: SecretsWatch) -> Stack:
    return with_offsite(sqlite_stack, sftp)


def tb(stack: Stack, *args: str, config: Path | None = None
       ) -> subprocess.CompletedProcess[str]:
    result = trackerbackup(config or stack.config_path, *args)
    for secret in (PASSWORD, BACKEND_KEY, BACKEND_PASSWORD):
        # never quote the output: a failing assertion would print the secret
        assert secret not in result.stdout + result.stderr, f"a secret in {args}' output"
    return result


def offsite(stack: Stack, backup_type: str, *options: str) -> list[str]:
    listed = tb(stack, "offsite", "list", *options)
    assert listed.returncode == 0, listed.stderr
    rows = [line.split() for line in listed.stdout.splitlines()[1:]]
    return sorted(row[2] for row in rows if row[1] == backup_type and row[3] == "yes")


def local(stack: Stack, backup_type: str) -> list[str]:
    listed = tb(stack, "list", backup_type, "--json")
    return sorted(b["id"] for b in json.loads(listed.stdout) if b["verified"])


def test_push_restore_round_trip_per_type_and_no_secret_in_any_cmdline(
        offsite_stack: Stack, tmp_path: Path, watch: SecretsWatch) -> None:
    stack = offsite_stack
    for backup_type in ("database", "selective"):
        ran = tb(stack, "run", backup_type)
        assert ran.returncode == 0, ran.stderr
        watch.scan_text(ran.stdout + ran.stderr, f"run {backup_type}'s output")
    assert saw_restic(watch)
    for backup_type in ("database", "selective"):
        assert offsite(stack, backup_type) == local(stack, backup_type)
    target = tmp_path / "restored"
    target.mkdir()
    restored = tb(stack, "restore", "database", "--latest", "--from", "offsite",
                  "--target", str(target), "--yes")
    assert restored.returncode == 0, restored.stderr
    [database] = list(target.rglob("*.db"))
    listed = json.loads(tb(stack, "list", "database", "--json").stdout)[0]
    manifest = (Path(listed["path"]) / "manifest.toml").read_text()
    import hashlib
    assert hashlib.sha256(database.read_bytes()).hexdigest() in manifest
    files = tmp_path / "files"
    restored = tb(stack, "restore", "selective", "--latest", "--from", "offsite",
                  "--target", str(files), "--yes")
    assert restored.returncode == 0, restored.stderr
    tracker_toml = next(stack.tracker_etc.rglob("*.toml"))
    copy = files / str(tracker_toml).lstrip("/")
    assert copy.read_bytes() == tracker_toml.read_bytes()


def test_server_stopped_for_two_runs_then_the_next_run_catches_up(
        offsite_stack: Stack, sftp: SftpServer) -> None:
    stack = offsite_stack
    assert tb(stack, "run", "selective").returncode == 0
    sftp.stop()
    for _ in range(2):
        failed = tb(stack, "run", "selective")
        assert failed.returncode == 1
        assert "copying selective backups off-site failed" in failed.stderr
        assert "hint:" in failed.stderr
    assert len(local(stack, "selective")) == 3
    sftp.start()
    caught_up = tb(stack, "run", "selective")
    assert caught_up.returncode == 0, caught_up.stderr
    assert offsite(stack, "selective") == local(stack, "selective")
    assert len(offsite(stack, "selective")) == 4


def test_paused_server_is_a_clear_failure_within_the_timeout(offsite_stack: Stack,
                                                              sftp: SftpServer) -> None:
    stack = offsite_stack
    sftp.pause()
    try:
        started = time.monotonic()
        failed = tb(stack, "run", "selective")
        elapsed = time.monotonic() - started
    finally:
        sftp.unpause()
    assert failed.returncode == 1
    assert "off-site" in failed.stderr
    assert "hint:" in failed.stderr
    assert elapsed < 120  # bounded by ssh's timeouts and offsite.timeout, never a hang
    assert len(local(stack, "selective")) == 1  # the local backup is intact and verified


def test_push_killed_with_sigkill_then_the_next_run_is_clean(offsite_stack: Stack) -> None:
    stack = offsite_stack
    run = subprocess.Popen(command(stack.config_path, "run", "database"), env=environment(),
                           start_new_session=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    wait_until(lambda: _restic_backup_running(run.pid), 120, what="restic's push")
    os.killpg(run.pid, signal.SIGKILL)  # the run and its restic, as systemd's SIGKILL does
    run.wait()
    ran = tb(stack, "run", "database")
    assert ran.returncode == 0, ran.stderr
    assert offsite(stack, "database") == local(stack, "database")
    pruned = tb(stack, "offsite", "prune")  # forget takes the exclusive lock
    assert pruned.returncode == 0, pruned.stderr


def _restic_backup_running(parent: int) -> bool:
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            status = (entry / "status").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = next((line.split()[1] for line in status.splitlines()
                     if line.startswith("PPid:")), "")
        if ppid == str(parent) and b"backup" in cmdline and cmdline[0].endswith(b"restic"):
            return True
    return False


def test_wrong_password_fails_clearly(offsite_stack: Stack) -> None:
    (offsite_stack.root / "restic.pw").write_text("wrong\n")
    failed = tb(offsite_stack, "run", "selective")
    assert failed.returncode == 1
    assert "wrong password" in failed.stderr
    assert len(local(offsite_stack, "selective")) == 1


def test_full_remote_storage_is_a_clear_failure_and_the_next_run_catches_up(
        sqlite_stack: Stack, images: Any, watch: SecretsWatch) -> None:
    with SftpServer(storage_mb=48) as server:
        stack = with_offsite(sqlite_stack, server)
        assert tb(stack, "run", "selective").returncode == 0
        server.fill()
        try:  # this run logs to a journal of its own: its fields are scanned too
            with JournalCapture(watch) as journal:
                full = subprocess.run(journal.wrap(command(stack.config_path, "run",
                                                           "selective")),
                                      env=environment(), capture_output=True, text=True,
                                      check=False, timeout=600)
        finally:
            server.free()
        watch.scan_text(full.stdout + full.stderr, "the failed run's output")
        assert full.returncode == 1
        [message] = [entry["MESSAGE"].decode() for entry in journal.entries
                     if entry.get("MESSAGE_ID") == Event.OFFSITE_STORAGE_FULL.value.encode()]
        assert "the off-site storage is full" in message
        assert "offsite prune" in message  # the hint: make room
        assert "github.com" not in message  # restic's Go stack trace is left out
        assert len(local(stack, "selective")) == 2  # the local backups are intact
        verified = tb(stack, "verify", "selective", "--all")
        assert verified.returncode == 0, verified.stderr
        caught_up = tb(stack, "run", "selective")
        assert caught_up.returncode == 0, caught_up.stderr
        assert offsite(stack, "selective") == local(stack, "selective")
        assert len(offsite(stack, "selective")) == 3


def test_prune_over_sftp_touches_only_this_hosts_snapshots(offsite_stack: Stack) -> None:
    stack = offsite_stack
    other_dir = stack.root / "backups-b"
    other_dir.mkdir(mode=0o700)
    other = stack.root / "tracker-b.toml"
    other.write_text(stack.config_path.read_text()
                     .replace('host = "tracker-a"', 'host = "tracker-b"')
                     .replace(toml_str(str(stack.backup_dir)), toml_str(str(other_dir))))
    other.chmod(0o600)
    for config in (stack.config_path, other, stack.config_path, other, stack.config_path):
        ran = tb(stack, "run", "selective", config=config)
        assert ran.returncode == 0, ran.stderr
    theirs = offsite(stack, "selective", "--host", "tracker-b")
    assert len(theirs) == 2
    strict = stack.root / "strict.toml"
    strict.write_text(stack.config_path.read_text().replace(
        "timeout = 60\n", "timeout = 60\nkeep_last = 1\nkeep_daily = 0\nkeep_weekly = 0\n"
        "keep_monthly = 0\n"))
    strict.chmod(0o600)
    pruned = tb(stack, "offsite", "prune", "selective", config=strict)
    assert pruned.returncode == 0, pruned.stderr
    assert pruned.stdout.count("forgot") == 2
    mine = offsite(stack, "selective")
    assert mine == local(stack, "selective")[-1:]  # the newest is kept
    assert offsite(stack, "selective", "--host", "tracker-b") == theirs
