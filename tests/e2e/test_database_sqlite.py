"""The database type against a live tracker stand-in: the operator's runbook, for real.

The stand-in writes like the tracker (a commit every ~5 ms, 5 s busy timeout, uid 1000)
into the bind-mounted SQLite file while trackerbackup finds it through `docker inspect`
and snapshots it. Every snapshot must equal the database after an exact prefix of the
writer's commits, and no tracker write may fail.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.kit.cli import start_trackerbackup, trackerbackup
from tests.kit.filesystems import skip_where_copies_are_clones
from tests.kit.wait import wait_until
from tests.testbed.engine import container_state
from tests.testbed.prefix import assert_prefix_consistent
from tests.testbed.stack import Stack
from trackerbackup.stream import open_raw

pytestmark = pytest.mark.testbed


def add_config(stack: Stack, text: str) -> None:
    stack.config_path.write_text(stack.config_path.read_text() + text)


def backups(stack: Stack) -> list[dict[str, Any]]:
    listed = trackerbackup(stack.config_path, "list", "database", "--json")
    assert listed.returncode == 0, listed.stderr
    result: list[dict[str, Any]] = json.loads(listed.stdout)
    return result


def manifest(backup: dict[str, Any]) -> dict[str, Any]:
    return tomllib.loads((Path(backup["path"]) / "manifest.toml").read_text())


def restore_snapshot(backup: dict[str, Any], dest: Path) -> Path:
    """What a restore does with the artifact: decompress it to a database file."""
    [name] = backup["artifacts"]
    target = dest / f"{backup['id']}.db"
    with open_raw(Path(backup["path"]) / name, "zstd") as raw, open(target, "wb") as out:
        shutil.copyfileobj(raw, out)
    return target


def root_owned_files(directory: Path) -> list[str]:
    owned = []
    for path in directory.iterdir():
        try:
            if path.stat().st_uid == 0:
                owned.append(path.name)
        except FileNotFoundError:
            continue  # a -journal of the live database, gone since it was listed
    return owned


@pytest.mark.parametrize("rows", [20_000, 300_000], ids=["small", "medium"])
@pytest.mark.parametrize("journal_mode", ["delete", "wal"])
def test_snapshots_of_a_live_tracker_are_prefix_consistent_and_no_write_fails(
    stack_factory: Callable[..., Stack], tmp_path: Path, journal_mode: str, rows: int
) -> None:
    stack = stack_factory(flavour="sqlite", journal_mode=journal_mode, rows=rows)
    add_config(stack, "[database.retention]\nkeep_last = 10\n")  # check every run's snapshot
    stack.wait_for_commits(200)
    for _ in range(3):
        result = trackerbackup(stack.config_path, "run", "database")
        assert result.returncode == 0, result.stderr
        stack.wait_for_commits(stack.writer_status()["committed"] + 20)  # a later prefix
    stack.wait_for_commits(stack.writer_status()["committed"] + 100)
    status = stack.stop_writer()
    assert status["failed"] == 0, status["errors"]

    found = backups(stack)
    assert len(found) == 3
    seqs = []
    for backup in found:
        details = manifest(backup)["source"]
        assert details["journal_mode"] == ("wal" if journal_mode == "wal" else "rollback")
        assert details["integrity"] == "ok"
        assert details["container"] == stack.tracker_container
        assert details["table_rows"]["torrents"] >= rows
        if journal_mode == "wal":
            assert details["strategy"] == "wal-pinned-copy"
        snapshot = restore_snapshot(backup, tmp_path)
        seqs.append(assert_prefix_consistent(snapshot, stack.initial_db, stack.oplog))
    assert seqs == sorted(seqs, reverse=True)  # newest first
    assert len(set(seqs)) == 3  # each a later prefix
    assert seqs[-1] > 0
    database_dir = stack.db_path.parent
    assert root_owned_files(database_dir) == []
    assert (database_dir.stat().st_mode & 0o7777) == 0o2770


def test_over_budget_pauses_the_tracker_and_always_resumes_it(
    sqlite_stack: Stack, tmp_path: Path
) -> None:
    add_config(sqlite_stack, "[sqlite]\nmax_writer_stall = 0.0\nover_budget = \"pause\"\n")
    sqlite_stack.wait_for_commits(100)
    result = trackerbackup(sqlite_stack.config_path, "run", "database")
    assert result.returncode == 0, result.stderr
    assert container_state(sqlite_stack.tracker_container) == "running"
    [backup] = backups(sqlite_stack)
    assert manifest(backup)["source"]["strategy"] == "locked-copy-paused"
    before = sqlite_stack.writer_status()["committed"]
    sqlite_stack.wait_for_commits(before + 50)  # the tracker writes again
    status = sqlite_stack.stop_writer()
    assert status["failed"] == 0, status["errors"]
    assert_prefix_consistent(restore_snapshot(backup, tmp_path), sqlite_stack.initial_db,
                             sqlite_stack.oplog)


def test_stop_window_restores_the_previous_container_state(sqlite_stack: Stack) -> None:
    add_config(sqlite_stack, "[sqlite]\nmax_writer_stall = 0.0\nover_budget = \"stop\"\n")
    result = trackerbackup(sqlite_stack.config_path, "run", "database")
    assert result.returncode == 0, result.stderr
    [backup] = backups(sqlite_stack)
    assert manifest(backup)["source"]["strategy"] == "locked-copy-stopped"
    assert container_state(sqlite_stack.tracker_container) == "running"

    # A tracker that was already stopped is left stopped.
    sqlite_stack.stop_writer()
    result = trackerbackup(sqlite_stack.config_path, "run", "database")
    assert result.returncode == 0, result.stderr
    assert container_state(sqlite_stack.tracker_container) == "exited"


def test_fail_policy_refuses_and_records_nothing(sqlite_stack: Stack) -> None:
    add_config(sqlite_stack, "[sqlite]\nmax_writer_stall = 0.0\nover_budget = \"fail\"\n")
    result = trackerbackup(sqlite_stack.config_path, "run", "database")
    assert result.returncode == 3, result.stderr
    assert "over the 0 s budget" in result.stderr
    assert 'raise sqlite.max_writer_stall, or set sqlite.over_budget = "pause"' in result.stderr
    assert backups(sqlite_stack) == []
    assert container_state(sqlite_stack.tracker_container) == "running"


def start_a_paused_run(stack_factory: Callable[..., Stack]
                       ) -> tuple[Stack, subprocess.Popen[str]]:
    """A run that pauses the tracker for its copy, started in the background, on a
    database big enough (213 MB) that a test can catch the run in the pause."""
    stack = stack_factory(flavour="sqlite", rows=2_000_000)
    skip_where_copies_are_clones(stack.root)
    add_config(stack, "[sqlite]\nmax_writer_stall = 0.0\nover_budget = \"pause\"\n"
                      "integrity_check = \"quick\"\n")
    return stack, start_trackerbackup(stack.config_path, "run", "database")


def test_sigterm_while_paused_unpauses_and_records_nothing(
    stack_factory: Callable[..., Stack],
) -> None:
    stack, process = start_a_paused_run(stack_factory)
    markers = stack.run_dir / "frozen"

    def about_to_pause_or_paused() -> bool:
        assert process.poll() is None, process.communicate()
        return markers.is_dir() and any(markers.glob("*.json"))

    wait_until(about_to_pause_or_paused, 60, interval=0.01, what="the pause marker")
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 1, stderr
    assert "stopped by signal SIGTERM" in stderr
    assert container_state(stack.tracker_container) == "running"
    assert backups(stack) == []
    assert list((stack.backup_dir / "database").iterdir()) == []
    assert stack.stop_writer()["failed"] == 0


def test_sigkill_while_paused_is_recovered_by_recover(
    stack_factory: Callable[..., Stack],
) -> None:
    stack, process = start_a_paused_run(stack_factory)

    def tracker_paused() -> bool:
        assert process.poll() is None, process.communicate()
        return container_state(stack.tracker_container) == "paused"

    wait_until(tracker_paused, 60, interval=0.01, what="the tracker paused")
    process.kill()
    process.communicate()
    assert container_state(stack.tracker_container) == "paused"
    recovered = trackerbackup(stack.config_path, "recover")
    assert recovered.returncode == 0, recovered.stderr
    assert recovered.stdout == f"thawed container {stack.tracker_container}\n"
    assert container_state(stack.tracker_container) == "running"
    rerun = trackerbackup(stack.config_path, "run", "database")  # and the next run cleans up
    assert rerun.returncode == 0, rerun.stderr
    assert "interrupted run" in rerun.stderr
    assert stack.stop_writer()["failed"] == 0


def test_check_reports_journal_mode_size_and_stall(sqlite_stack: Stack) -> None:
    result = trackerbackup(sqlite_stack.config_path, "check", "database")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "journal_mode: rollback" in result.stdout
    assert "estimated_stall_seconds" in result.stdout
    assert str(sqlite_stack.db_path) in result.stdout


def test_enable_wal_switches_mode_and_restores_the_tracker(sqlite_stack: Stack) -> None:
    result = trackerbackup(sqlite_stack.config_path, "sqlite", "enable-wal")
    assert result.returncode == 0, result.stderr
    assert container_state(sqlite_stack.tracker_container) == "running"
    sqlite_stack.wait_for_commits(sqlite_stack.writer_status()["committed"] + 20)
    check = trackerbackup(sqlite_stack.config_path, "check", "database")
    assert "journal_mode: wal" in check.stdout
    backup = trackerbackup(sqlite_stack.config_path, "run", "database")
    assert backup.returncode == 0, backup.stderr
    assert sqlite_stack.stop_writer()["failed"] == 0


@pytest.mark.parametrize(
    ("config", "code", "message"),
    [
        ("[tracker]\ncontainer = \"no-such-tracker\"\n", 3, "no container of service"),
        ("[sqlite]\npath_in_container = \"/data/tracker.db\"\n", 3,
         "is not on any mount of container"),
        ("[sqlite]\npath_in_container = \"/var/lib/torrust/tracker/database/nope.db\"\n", 3,
         "nope.db"),
    ],
)
def test_environment_errors_name_the_cause(sqlite_stack: Stack, config: str, code: int,
                                           message: str) -> None:
    if "no-such-tracker" in config:
        # The stack's labels would still find it: point the project elsewhere as well.
        config = config.replace("[tracker]\n", "[tracker]\nservice = \"tracker\"\n")
        text = sqlite_stack.config_path.read_text().replace(
            f'compose_project = "{sqlite_stack.project}"', 'compose_project = "elsewhere"')
        sqlite_stack.config_path.write_text(text)
        text = sqlite_stack.config_path.read_text().replace(
            f'container = "{sqlite_stack.tracker_container}"', 'container = "no-such-tracker"')
        sqlite_stack.config_path.write_text(text)
    else:
        add_config(sqlite_stack, config)
    result = trackerbackup(sqlite_stack.config_path, "run", "database")
    assert result.returncode == code, result.stderr
    assert message in result.stderr
    assert "hint:" in result.stderr
    assert backups(sqlite_stack) == []


def test_not_a_database_and_corrupt_pages_are_refused(sqlite_stack: Stack,
                                                      tmp_path: Path) -> None:
    text_file = tmp_path / "tracker.db"
    text_file.write_text("this is not a database\n" * 100)
    add_config(sqlite_stack, f"[sqlite]\nhost_path = \"{text_file}\"\n")
    result = trackerbackup(sqlite_stack.config_path, "run", "database")
    assert result.returncode == 3, result.stderr
    assert "not an SQLite database (no SQLite header)" in result.stderr
    assert str(text_file) in result.stderr

    corrupt = tmp_path / "corrupt.db"
    sqlite_stack.stop_writer()
    shutil.copyfile(sqlite_stack.db_path, corrupt)
    data = bytearray(corrupt.read_bytes())
    page = 4096
    for offset in range(3 * page, len(data) - page, 7 * page):
        data[offset + 200: offset + 260] = os.urandom(60)
    corrupt.write_bytes(bytes(data))
    sqlite_stack.config_path.write_text(
        sqlite_stack.config_path.read_text().replace(str(text_file), str(corrupt)))
    result = trackerbackup(sqlite_stack.config_path, "run", "database")
    assert result.returncode == 1, result.stderr
    assert "the snapshot failed quick_check" in result.stderr  # the default check
    assert backups(sqlite_stack) == []
