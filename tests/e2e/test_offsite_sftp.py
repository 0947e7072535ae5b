"""Off-site copies to a real sftp repository (openssh-server container, key auth), from a
live tracker stand-in: push, outage and catch-up, restore round trip, kill, pause."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_database_sqlite import add_config
from tests.kit.cli import command, environment, trackerbackup
from tests.kit.wait import wait_until
from tests.testbed.sftp import SftpServer
from tests.testbed.stack import Stack, toml_str

pytestmark = pytest.mark.testbed
PASSWORD = "sftp-offsite-pw-5c1e0b"


@pytest.fixture
def sftp(images: Any) -> Iterator[SftpServer]:
    with SftpServer() as server:
        yield server


@pytest.fixture
def offsite_stack(sqlite_stack: Stack, sftp: SftpServer) -> Stack:
    password = sqlite_stack.root / "restic.pw"
    password.write_text(PASSWORD + "\n")
    password.chmod(0o600)
    add_config(sqlite_stack, f"""
[offsite]
repository = {toml_str(sftp.repository)}
password_file = {toml_str(str(password))}
options = [{toml_str("sftp.command=" + sftp.ssh_command())}]
timeout = 30

[database.retention]
keep_last = 10

[selective.retention]
keep_last = 10
""")
    init = tb(sqlite_stack, "offsite", "init")
    assert init.returncode == 0, init.stderr
    return sqlite_stack


class CmdlineWatch:
    """Samples every /proc/*/cmdline while a command runs: the password must never be in
    one (restic gets it through RESTIC_PASSWORD_FILE)."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.leaks: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> CmdlineWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._stop.is_set():
            for entry in Path("/proc").glob("[0-9]*/cmdline"):
                try:
                    cmdline = entry.read_bytes().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    continue
                if "restic" in cmdline:
                    self.seen.add(cmdline.split()[0])
                if PASSWORD in cmdline:
                    self.leaks.append(cmdline)
            time.sleep(0.01)


def tb(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    result = trackerbackup(stack.config_path, *args)
    assert PASSWORD not in result.stdout + result.stderr
    return result


def offsite(stack: Stack, backup_type: str) -> list[str]:
    listed = tb(stack, "offsite", "list")
    assert listed.returncode == 0, listed.stderr
    rows = [line.split() for line in listed.stdout.splitlines()[1:]]
    return sorted(row[2] for row in rows if row[1] == backup_type and row[3] == "yes")


def local(stack: Stack, backup_type: str) -> list[str]:
    listed = tb(stack, "list", backup_type, "--json")
    return sorted(b["id"] for b in json.loads(listed.stdout) if b["verified"])


def test_push_restore_round_trip_per_type_and_no_password_in_any_cmdline(
        offsite_stack: Stack, tmp_path: Path) -> None:
    stack = offsite_stack
    with CmdlineWatch() as watch:
        for backup_type in ("database", "selective"):
            ran = tb(stack, "run", backup_type)
            assert ran.returncode == 0, ran.stderr
    assert watch.seen, "the watch saw no restic process"
    assert watch.leaks == []
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
