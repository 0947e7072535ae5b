"""sqlite/filtered.py on real SQLite files: the chosen rows of the chosen tables, with
their schema, in one read; and what `check` says about a selection the database lacks."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.kit.filesystems import tmpfs
from tests.testbed.tree import create_sqlite_db
from trackerbackup.errors import BackupFailed, EnvironmentProblem, ExitCode
from trackerbackup.rowfilter import Selection, parse
from trackerbackup.sqlite import filtered
from trackerbackup.sqlite.connection import connect
from trackerbackup.sqlite.filtered import filtered_copy, schema_problems

DEFAULT = Selection(("keys", "whitelist", "torrent_aggregate_metrics", "torrents"),
                    (parse("torrents.completed > 0"),))


def rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as connection:
        return sorted(connection.execute(sql).fetchall())


@pytest.fixture(params=["delete", "wal"])
def tracker_db(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    db = tmp_path / "tracker.db"
    create_sqlite_db(db, 3000, seed=1, journal_mode=request.param)
    return db


def test_the_copy_holds_exactly_the_filtered_rows_of_the_chosen_tables(
    tracker_db: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "critical.db"

    copied = filtered_copy(lambda: connect(tracker_db), tracker_db, dest, DEFAULT)

    assert copied.read_seconds >= 0
    assert rows(dest, "SELECT * FROM torrents") == rows(
        tracker_db, "SELECT * FROM torrents WHERE completed > 0")
    assert 0 < len(rows(dest, "SELECT * FROM torrents")) < 3000
    for table in ("keys", "whitelist", "torrent_aggregate_metrics"):
        assert rows(dest, f"SELECT * FROM {table}") == rows(tracker_db, f"SELECT * FROM {table}")
    with sqlite3.connect(dest) as connection:
        tables = {r[0] for r in connection.execute(
            "SELECT name FROM sqlite_schema WHERE type = 'table'")}
        assert tables == {*DEFAULT.tables, "sqlite_sequence"}  # _seq was not chosen
        # The UNIQUE constraints came along: a merge can upsert by them.
        assert connection.execute("PRAGMA index_list(torrents)").fetchall()
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_a_schema_change_between_creating_the_copy_and_reading_fails_the_copy(
    tracker_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    create = filtered._create

    def create_then_alter(dest: Path, statements: list[str]) -> None:
        create(dest, statements)
        with sqlite3.connect(tracker_db) as connection:
            connection.execute("CREATE INDEX by_completed ON torrents (completed)")

    monkeypatch.setattr(filtered, "_create", create_then_alter)

    with pytest.raises(BackupFailed, match="schema changed during the copy"):
        filtered_copy(lambda: connect(tracker_db), tracker_db, tmp_path / "c.db", DEFAULT)


def test_schema_problems_name_the_key_the_table_and_the_column(tracker_db: Path) -> None:
    selection = Selection(("keys", "peers", "torrents"),
                          (parse("keys.bogus > 0"), parse("whitelist.id > 0"),
                           parse("torrents.completed > 0")))

    problems = schema_problems(lambda: connect(tracker_db), tracker_db, selection,
                               "critical.tables", "critical.row_filters")

    assert problems == [
        f"critical.tables: the database {tracker_db} has no table 'peers'",
        "critical.row_filters: table 'keys' has no column 'bogus' (it has: id, key, "
        "valid_until)",
        "critical.row_filters: 'whitelist.id > 0' filters table 'whitelist', which "
        "critical.tables does not list",
    ]
    assert schema_problems(lambda: connect(tracker_db), tracker_db, DEFAULT, "t", "f") == []


def test_a_read_over_its_budget_is_interrupted_and_releases_the_database(
    tracker_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def endless(source: sqlite3.Connection, *args: object) -> None:
        source.execute("WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) "
                       "SELECT count(*) FROM n").fetchone()

    monkeypatch.setattr(filtered, "_copy_table", endless)

    with pytest.raises(filtered.ReadOverBudget) as over:
        filtered_copy(lambda: connect(tracker_db), tracker_db, tmp_path / "c.db", DEFAULT,
                      budget=0.2)

    assert 0.2 <= over.value.held < 2.0
    with sqlite3.connect(tracker_db, timeout=0) as writer:  # no lock is left behind
        writer.execute("UPDATE torrents SET completed = completed + 1 WHERE id = 1")


def test_a_read_within_its_budget_is_the_same_copy(tracker_db: Path, tmp_path: Path) -> None:
    dest = tmp_path / "critical.db"

    filtered_copy(lambda: connect(tracker_db), tracker_db, dest, DEFAULT, budget=30.0)

    assert rows(dest, "SELECT * FROM torrents") == rows(
        tracker_db, "SELECT * FROM torrents WHERE completed > 0")


def test_a_read_that_cannot_take_the_lock_counts_as_over_its_budget(tmp_path: Path) -> None:
    db = tmp_path / "tracker.db"
    create_sqlite_db(db, 300, seed=1, journal_mode="delete")
    with sqlite3.connect(db, isolation_level=None) as writer:
        writer.execute("BEGIN EXCLUSIVE")  # a writer in the middle of its commit
        with pytest.raises(filtered.ReadOverBudget) as over:
            filtered_copy(lambda: connect(db, timeout=0.1), db, tmp_path / "c.db", DEFAULT,
                          budget=5.0)
        writer.execute("ROLLBACK")

    assert over.value.held == 0.0


def test_the_read_estimate_scales_a_timed_sample_and_gives_up_on_a_locked_database(
    tracker_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(filtered, "SAMPLE_ROWS", 1000)  # a third of the 3,000 torrents
    estimate, held = filtered.estimated_read(lambda: connect(tracker_db), DEFAULT)
    assert 0 < estimate < 5.0
    assert 0 < held < 5.0

    with sqlite3.connect(tracker_db, isolation_level=None) as writer:
        if writer.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
            return  # a WAL writer never keeps a reader out
        writer.execute("BEGIN EXCLUSIVE")
        assert filtered.estimated_read(lambda: connect(tracker_db, timeout=0.1), DEFAULT) == (
            float("inf"), 0.0)
        writer.execute("ROLLBACK")


def test_a_full_backup_file_system_is_a_disk_problem_naming_the_copy(
    tracker_db: Path, tmp_path: Path
) -> None:
    # Found by the fault suite: SQLITE_FULL was a "backup failed" (exit 1) naming the
    # tracker's database, whose file system had all the room it needed.
    tiny = tmp_path / "tiny"
    with tmpfs(tiny, "size=12k"), pytest.raises(EnvironmentProblem) as refused:  # 3 pages
        filtered_copy(lambda: connect(tracker_db), tracker_db, tiny / "c.db", DEFAULT)

    assert refused.value.exit_code == ExitCode.ENVIRONMENT
    assert str(tiny / "c.db") in str(refused.value)
    assert "free space on the backup filesystem" in (refused.value.hint or "")
