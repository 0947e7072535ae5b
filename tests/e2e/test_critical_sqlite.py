"""Critical snapshots of a live tracker stand-in on the test bed (SQLite flavour): each
is the critical filter applied to the database after an exact prefix of the writer's
commits, no tracker write fails or waits past the budget, and a full restore plus a merge
of a newer critical snapshot gives every key and completed count of the newer state."""

from __future__ import annotations

import sqlite3
import tempfile
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.kit.cli import trackerbackup
from tests.testbed.prefix import compare, read_seq_sqlite, replay, sqlite_tables
from tests.testbed.stack import Stack
from trackerbackup.stream import open_raw

pytestmark = pytest.mark.testbed

BUDGET_S = 1.0  # sqlite.max_writer_stall (the default)
# The default selection, plus the writer's sequence table so a snapshot names its prefix.
CRITICAL = ('[critical]\ntables = ["keys", "whitelist", "torrent_aggregate_metrics", '
            '"torrents", "_testbed_seq"]\n[critical.retention]\nkeep_last = 10\n')


def critical_backups(stack: Stack) -> list[Path]:
    return sorted((stack.backup_dir / "critical").glob("2*"), reverse=True)


def expanded(backup: Path, dest: Path) -> tuple[Path, dict[str, Any]]:
    """The backup's database file, and its manifest's `source`."""
    with open_raw(backup / "tracker.db.zst", "zstd") as raw, open(dest, "wb") as out:
        while chunk := raw.read(1 << 20):
            out.write(chunk)
    source: dict[str, Any] = tomllib.loads((backup / "manifest.toml").read_text())["source"]
    return dest, source


def critical_state(stack: Stack, seq: int) -> dict[str, list[tuple[Any, ...]]]:
    """The critical filter applied to the initial database plus the writer's ops 1..seq."""
    with tempfile.TemporaryDirectory(prefix="tb-critical-") as tmp:
        tables = sqlite_tables(replay(stack.initial_db, stack.oplog, seq,
                                      Path(tmp) / "replay.db"))
    tables = {name: rows for name, rows in tables.items()
              if name in ("keys", "whitelist", "torrent_aggregate_metrics", "torrents",
                          "_testbed_seq")}
    tables["torrents"] = [row for row in tables["torrents"] if row[2] > 0]
    return tables


def assert_critical_prefix(stack: Stack, snapshot: Path) -> int:
    seq = read_seq_sqlite(snapshot)
    actual = {name: rows for name, rows in sqlite_tables(snapshot).items()
              if name != "sqlite_sequence"}
    compare(actual, critical_state(stack, seq), f"critical snapshot (seq {seq})")
    return seq


@pytest.mark.parametrize(("journal_mode", "method"), [
    ("delete", "filtered-under-lock"), ("wal", "wal-read-transaction")])
def test_critical_snapshots_are_the_filter_of_a_commit_prefix_and_no_write_fails(
    stack_factory: Callable[..., Stack], tmp_path: Path, journal_mode: str, method: str
) -> None:
    stack = stack_factory(flavour="sqlite", journal_mode=journal_mode, rows=100_000)
    stack.config_path.write_text(stack.config_path.read_text() + CRITICAL)
    stack.wait_for_commits(200)
    for _ in range(3):
        result = trackerbackup(stack.config_path, "run", "critical")
        assert result.returncode == 0, result.stderr
    stack.wait_for_commits(stack.writer_status()["committed"] + 100)
    status = stack.stop_writer()

    assert status["failed"] == 0, status["errors"]
    assert status["max_stall_ms"] < BUDGET_S * 1000, status
    seqs = []
    for number, backup in enumerate(critical_backups(stack)):
        snapshot, source = expanded(backup, tmp_path / f"{number}.db")
        assert (source["method"], source["container"]) == (method, stack.tracker_container)
        assert source["writers_waited_seconds"] <= BUDGET_S
        assert 0 < source["table_rows"]["torrents"] < 100_000  # completed > 0 only
        seqs.append(assert_critical_prefix(stack, snapshot))
    assert len(seqs) == 3
    assert seqs == sorted(seqs, reverse=True)
    assert seqs[-1] > 0


def test_full_restore_then_merge_of_a_newer_critical_snapshot_gives_the_newer_state(
    sqlite_stack: Stack, tmp_path: Path
) -> None:
    stack = sqlite_stack
    stack.config_path.write_text(stack.config_path.read_text() + CRITICAL)
    stack.wait_for_commits(100)
    assert trackerbackup(stack.config_path, "run", "database").returncode == 0
    stack.wait_for_commits(stack.writer_status()["committed"] + 300)  # new keys and counts
    ran = trackerbackup(stack.config_path, "run", "critical")
    assert ran.returncode == 0, ran.stderr
    stack.wait_for_commits(stack.writer_status()["committed"] + 50)
    assert stack.stop_writer()["failed"] == 0
    [backup] = critical_backups(stack)
    newer_seq = assert_critical_prefix(stack, expanded(backup, tmp_path / "c.db")[0])

    full = trackerbackup(stack.config_path, "restore", "database", "--latest", "--yes")
    assert full.returncode == 0, full.stderr
    older_seq = read_seq_sqlite(stack.db_path)
    merged = trackerbackup(stack.config_path, "restore", "critical", "--latest", "--merge", "--yes")
    assert merged.returncode == 0, merged.stderr

    assert older_seq < newer_seq
    newer = critical_state(stack, newer_seq)
    with sqlite3.connect(f"file:{stack.db_path}?mode=ro", uri=True) as live:
        assert sorted(live.execute("SELECT key, valid_until FROM keys")) == sorted(
            (key, valid_until) for _, key, valid_until in newer["keys"])
        assert dict(live.execute("SELECT info_hash, completed FROM torrents "
                                 "WHERE completed > 0")) == {
            info_hash: count for _, info_hash, count in newer["torrents"]}
        assert sorted(live.execute("SELECT info_hash FROM whitelist")) == sorted(
            (info_hash,) for _, info_hash in newer["whitelist"])
        assert dict(live.execute("SELECT metric_name, value FROM torrent_aggregate_metrics")
                    ) == {name: value for _, name, value in newer["torrent_aggregate_metrics"]}
        assert live.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    info = stack.db_path.stat()
    assert (info.st_uid, info.st_gid) == (1000, 1000)
    stack.start_writer()  # the tracker runs on the merged database
    assert stack.wait_for_commits(20)["failed"] == 0
    assert stack.stop_writer()["failed"] == 0


def test_a_merge_stops_the_running_tracker_and_starts_it_again(
    sqlite_stack: Stack, tmp_path: Path
) -> None:
    stack = sqlite_stack
    stack.config_path.write_text(stack.config_path.read_text() + CRITICAL)
    stack.wait_for_commits(100)
    assert trackerbackup(stack.config_path, "run", "critical").returncode == 0
    [backup] = critical_backups(stack)
    snapshot, _ = expanded(backup, tmp_path / "c.db")
    stack.wait_for_commits(stack.writer_status()["committed"] + 100)  # counted on since

    merged = trackerbackup(stack.config_path, "restore", "critical", "--latest", "--merge", "--yes")

    assert merged.returncode == 0, merged.stderr
    assert "stop container" in merged.stdout
    assert "start container" in merged.stdout
    [safety] = (stack.backup_dir / "safety").iterdir()
    assert (safety / "restore.toml").exists()
    status = stack.wait_for_commits(stack.writer_status()["committed"] + 20)
    assert status["failed"] == 0, status["errors"]
    assert stack.stop_writer()["failed"] == 0
    with sqlite3.connect(f"file:{snapshot}?mode=ro", uri=True) as saved, \
            sqlite3.connect(f"file:{stack.db_path}?mode=ro", uri=True) as live:
        counts = dict(live.execute("SELECT info_hash, completed FROM torrents"))
        for info_hash, count in saved.execute("SELECT info_hash, completed FROM torrents"):
            assert counts[info_hash] >= count  # nothing counted since was lowered
        assert set(saved.execute("SELECT key FROM keys")) <= set(live.execute(
            "SELECT key FROM keys"))
