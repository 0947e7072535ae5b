"""The operator's restore runbook against a live tracker stand-in on the test bed:
back up, change, restore, and the tracker runs on what came back (uid 1000, its own
files); a restore killed with SIGKILL leaves the safety copy and no stopped tracker."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.kit.cli import start_trackerbackup, trackerbackup
from tests.testbed.engine import container_state
from tests.testbed.prefix import assert_prefix_consistent, read_seq_sqlite
from tests.testbed.stack import Stack
from trackerbackup.stream import open_raw

pytestmark = pytest.mark.testbed


def backed_up_snapshot(stack: Stack, dest: Path) -> Path:
    [backup] = sorted((stack.backup_dir / "database").glob("2*"))
    with open_raw(backup / "tracker.db.zst", "zstd") as raw, open(dest, "wb") as out:
        while chunk := raw.read(1 << 20):
            out.write(chunk)
    return dest


def table_rows(db: Path) -> dict[str, list[tuple[object, ...]]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        names = [r[0] for r in connection.execute(
            "SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")]
        return {name: connection.execute(f'SELECT * FROM "{name}"').fetchall()
                for name in names}


def test_restore_in_place_while_the_tracker_runs(sqlite_stack: Stack, tmp_path: Path) -> None:
    stack = sqlite_stack
    stack.wait_for_commits(50)
    assert trackerbackup(stack.config_path, "run", "database").returncode == 0
    snapshot = backed_up_snapshot(stack, tmp_path / "backup.db")
    seq_backed_up = assert_prefix_consistent(snapshot, stack.initial_db, stack.oplog)
    stack.wait_for_commits(stack.writer_status()["committed"] + 100)  # changes after it

    restored = trackerbackup(stack.config_path, "restore", "database", "--latest", "--yes")

    assert restored.returncode == 0, restored.stderr
    assert "stop container" in restored.stdout
    assert "start container" in restored.stdout
    assert container_state(stack.tracker_container) == "running"
    [safety] = (stack.backup_dir / "safety").iterdir()
    assert read_seq_sqlite(safety / "tracker.db") > seq_backed_up  # the replaced state
    # The tracker runs on the restored file: it goes on counting from the backup's state.
    status = stack.wait_for_commits(stack.writer_status()["committed"] + 20)
    assert status["failed"] == 0
    info = stack.db_path.stat()
    assert (info.st_uid, info.st_gid) == (1000, 1000)
    assert stack.stop_writer()["failed"] == 0


def test_restore_with_the_tracker_stopped_gives_the_backup_exactly(sqlite_stack: Stack,
                                                                   tmp_path: Path) -> None:
    stack = sqlite_stack
    stack.wait_for_commits(50)
    assert trackerbackup(stack.config_path, "run", "database").returncode == 0
    stack.wait_for_commits(stack.writer_status()["committed"] + 50)
    stack.stop_writer()  # the operator stopped the tracker first

    restored = trackerbackup(stack.config_path, "restore", "database", "--latest", "--yes")

    assert restored.returncode == 0, restored.stderr
    assert "leave container" in restored.stdout
    assert container_state(stack.tracker_container) == "exited"  # left as it was
    expected = table_rows(backed_up_snapshot(stack, tmp_path / "backup.db"))
    assert table_rows(stack.db_path) == expected
    assert not Path(f"{stack.db_path}-journal").exists()
    stack.start_writer()  # and the tracker starts on it
    assert stack.wait_for_commits(20)["failed"] == 0
    assert stack.stop_writer()["failed"] == 0


def test_a_restore_killed_mid_way_leaves_the_safety_copy_and_no_stopped_tracker(
    sqlite_stack: Stack,
) -> None:
    stack = sqlite_stack
    stack.wait_for_commits(50)
    assert trackerbackup(stack.config_path, "run", "database").returncode == 0
    process = start_trackerbackup(stack.config_path, "restore", "database", "--latest", "--yes")
    assert process.stdout is not None
    for line in process.stdout:
        if "remove tracker.db-wal" in line:  # the safety copy is complete, tracker stopped
            process.kill()
            break
    process.communicate()
    assert process.returncode == -9

    recovered = trackerbackup(stack.config_path, "recover")
    check = trackerbackup(stack.config_path, "check", "database")

    assert recovered.returncode == 0, recovered.stderr
    assert container_state(stack.tracker_container) == "running"
    [safety] = (stack.backup_dir / "safety").iterdir()
    assert (safety / "RESTORE-IN-PROGRESS").exists()
    with sqlite3.connect(safety / "tracker.db") as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert "was interrupted" in check.stdout
    assert str(safety) in check.stdout
    assert stack.stop_writer()["failed"] == 0
